//! `oxray job submit|list|status|logs|stop|delete`: drivers run by the head
//! through the dashboard's Jobs API, as `ray job` does.
//!
//! The CLI is only a client: the head starts the driver, keeps its log and
//! reaps it, so closing the submitting shell (or pressing Ctrl-C while
//! following) leaves the job running. `--address` is the dashboard's address
//! (`http://HOST:8265`); on the head's machine the session directory names it.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use oxray_core::daemon;
use oxray_dashboard::{DashboardClient, JobDetails, JobState, JobSubmitRequest, RuntimeEnv};
use std::io::Write;
use std::time::Duration;

/// How often `--follow` and waiting ask for news.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run `-- CMD ARGS` as a driver on the head node and follow its logs
    /// until it ends (unless --no-wait).
    Submit(SubmitArgs),
    /// Every submitted job with its status.
    List(DashboardArgs),
    /// One job's status, message and exit code.
    Status(JobArgs),
    /// A job's output; --follow streams it until the job ends.
    Logs(LogsArgs),
    /// Stop a job: its driver and every process it started.
    Stop(StopArgs),
    /// Forget a finished job and its log.
    Delete(JobArgs),
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The dashboard, HOST:PORT or http://HOST:PORT (default: the cluster
    /// started on this machine).
    #[arg(long)]
    address: Option<String>,
    #[command(flatten)]
    token: super::cluster::TokenArgs,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    dashboard: DashboardArgs,
    /// Upload this directory to the head (Ray's `--working-dir`): the
    /// driver runs in the head's copy, with it first on PYTHONPATH, and ships
    /// it on to the job's workers on every node. Without it the driver runs
    /// in this directory's path on the head's machine (it must exist there).
    #[arg(long)]
    working_dir: Option<std::path::PathBuf>,
    /// Leave these paths of --working-dir out of its copy (repeatable; Ray's
    /// runtime_env excludes, gitignore patterns, on top of the directory's
    /// .gitignore files): a name anywhere (`.git`, `*.ckpt`) or, with a
    /// `/`, a path from the directory (`/results`).
    #[arg(long = "exclude", value_name = "PATTERN", requires = "working_dir")]
    exclude: Vec<String>,
    /// Environment variable for the driver and the job's workers, KEY=VALUE
    /// (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Use this submission id instead of a random one.
    #[arg(long)]
    submission_id: Option<String>,
    /// Return once the job is submitted instead of following its logs.
    #[arg(long)]
    no_wait: bool,
    /// The driver's command line. One word is run as a shell command line;
    /// several are quoted for the shell word by word.
    #[arg(last = true, required = true, value_name = "CMD")]
    entrypoint: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Submission id, as `oxray job submit` printed it.
    id: String,
    #[command(flatten)]
    dashboard: DashboardArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Keep printing new output until the job ends.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Return at once instead of waiting for the job to end.
    #[arg(long)]
    no_wait: bool,
}

pub fn run(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Submit(args) => submit(args),
        JobCommand::List(args) => list(&client(&args)?),
        JobCommand::Status(args) => {
            print_status(&client(&args.dashboard)?.job(&args.id)?);
            Ok(())
        }
        JobCommand::Logs(args) => {
            let client = client(&args.job.dashboard)?;
            if args.follow {
                let job = follow(&client, &args.job.id)?;
                print_status(&job);
            } else {
                print_logs(&client, &args.job.id)?;
            }
            Ok(())
        }
        JobCommand::Stop(args) => stop(args),
        JobCommand::Delete(args) => {
            client(&args.dashboard)?.delete_job(&args.id)?;
            println!("Job '{}' deleted", args.id);
            Ok(())
        }
    }
}

fn client(args: &DashboardArgs) -> anyhow::Result<DashboardClient> {
    let address = match &args.address {
        Some(address) => address.clone(),
        None => {
            let file = daemon::session_dir()?.join(super::cluster::DASHBOARD_ADDRESS_FILE);
            daemon::read_private_file(&file)?
                .map(|a| a.trim().to_string())
                .with_context(|| {
                    format!(
                        "no dashboard found ({} is missing): pass --address http://HOST:8265",
                        file.display()
                    )
                })?
        }
    };
    Ok(DashboardClient::new(&address, &args.token.resolve()?)?)
}

/// `--env KEY=VALUE` flags as variables.
pub(crate) fn parse_env_vars(
    pairs: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut env_vars = std::collections::BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--env {pair}: expected KEY=VALUE");
        };
        if key.is_empty() {
            bail!("--env {pair}: the variable name is empty");
        }
        env_vars.insert(key.to_string(), value.to_string());
    }
    Ok(env_vars)
}

fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let client = client(&args.dashboard)?;
    let mut env_vars = parse_env_vars(&args.env)?;
    // The job's driver packs the head's copy again for its workers: a
    // choice to ship what `.gitignore` files name holds there too.
    let ignore_gitignore = oxray_core::IGNORE_GITIGNORE_ENV;
    if args.working_dir.is_some() && std::env::var(ignore_gitignore).is_ok_and(|v| v == "1") {
        env_vars
            .entry(ignore_gitignore.to_string())
            .or_insert_with(|| "1".to_string());
    }
    let working_dir = match args.working_dir {
        Some(dir) => {
            let (digest, archive) = oxray_core::pack_working_dir(&dir, &args.exclude)?;
            client.upload_package(&digest, archive)?
        }
        None => std::env::current_dir()
            .context("cannot read the current directory")?
            .display()
            .to_string(),
    };
    let request = JobSubmitRequest {
        entrypoint: command_line(&args.entrypoint),
        submission_id: args.submission_id,
        runtime_env: RuntimeEnv {
            working_dir: Some(working_dir),
            env_vars,
        },
        metadata: Default::default(),
    };
    let id = client.submit_job(&request)?;
    println!("Job '{id}' submitted successfully");
    if args.no_wait {
        println!("Follow its logs with: oxray job logs --follow {id}");
        return Ok(());
    }
    let job = follow(&client, &id)?;
    print_status(&job);
    if job.status != JobState::Succeeded {
        bail!("job '{id}' ended {}: {}", job.status, job.message);
    }
    Ok(())
}

/// The entrypoint from `-- CMD ARGS`: one word as a shell command line,
/// several quoted word by word.
fn command_line(words: &[String]) -> String {
    if let [single] = words {
        return single.clone();
    }
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the job's output as it comes until the job has ended and all of
/// it is printed; returns the job's final state.
fn follow(client: &DashboardClient, id: &str) -> anyhow::Result<JobDetails> {
    let mut offset = 0;
    loop {
        // Read the state first: once it is final, the driver has exited and
        // the log read after it is complete.
        let job = client.job(id)?;
        let chunk = client.job_logs(id, offset)?;
        offset = chunk.offset;
        write_out(&chunk.logs);
        if chunk.logs.is_empty() {
            if job.status.is_terminal() {
                return Ok(job);
            }
            std::thread::sleep(POLL);
        }
    }
}

fn print_logs(client: &DashboardClient, id: &str) -> anyhow::Result<()> {
    let mut offset = 0;
    loop {
        let chunk = client.job_logs(id, offset)?;
        if chunk.logs.is_empty() {
            return Ok(());
        }
        offset = chunk.offset;
        write_out(&chunk.logs);
    }
}

/// A closed pipe (`oxray job logs ID | head`) is no reason to panic.
fn write_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn print_status(job: &JobDetails) {
    println!("Status for job '{}': {}", job.submission_id, job.status);
    println!("Status message: {}", job.message);
    if let Some(code) = job.driver_exit_code {
        println!("Driver exit code: {code}");
    }
}

fn list(client: &DashboardClient) -> anyhow::Result<()> {
    let jobs = client.list_jobs()?;
    println!("SUBMISSION_ID\tSTATUS\tEXIT_CODE\tSTART_TIME\tEND_TIME\tENTRYPOINT");
    for job in jobs {
        let code = job
            .driver_exit_code
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        let end = job
            .end_time
            .map_or_else(|| "-".to_string(), |t| t.to_string());
        println!(
            "{}\t{}\t{code}\t{}\t{end}\t{}",
            job.submission_id, job.status, job.start_time, job.entrypoint
        );
    }
    Ok(())
}

fn stop(args: StopArgs) -> anyhow::Result<()> {
    let client = client(&args.job.dashboard)?;
    let id = &args.job.id;
    if !client.stop_job(id)? {
        let job = client.job(id)?;
        println!("Job '{id}' is not running (it is {})", job.status);
        return Ok(());
    }
    if args.no_wait {
        println!("Stopping job '{id}'");
        return Ok(());
    }
    loop {
        let job = client.job(id)?;
        if job.status.is_terminal() {
            println!("Job '{id}' was stopped ({})", job.status);
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_is_a_command_line_and_several_are_quoted() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&words(&["echo a && echo b"])),
            "echo a && echo b"
        );
        assert_eq!(
            command_line(&words(&[
                "oxray", "train", "c.yaml", "--set", "a=b c", "it's"
            ])),
            r"oxray train c.yaml --set 'a=b c' 'it'\''s'"
        );
    }
}
