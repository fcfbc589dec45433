//! A head started as its own process for the cluster benches (`oxray bench
//! heartbeats`, `oxray bench scheduling`), so what it spends can be read from
//! `/proc`: CPU seconds from `stat`, resident and peak memory from `status`.

use anyhow::{bail, Context};
use std::process::Child;

/// A head daemon in a private session directory, stopped when dropped.
pub struct HeadProcess {
    child: Child,
    pub address: String,
    pub token: String,
    /// The head's session directory, removed once it has stopped.
    session: tempfile::TempDir,
}

/// A process's memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident now (`VmRSS`), in MiB.
    pub rss_mib: f64,
    /// Most ever resident (`VmHWM`), in MiB.
    pub peak_mib: f64,
}

impl HeadProcess {
    /// Starts `oxray start --head --port 0` with `extra` arguments.
    pub fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let session = tempfile::tempdir().context("cannot create a session directory")?;
        let mut args = vec!["--head", "--port", "0"];
        args.extend_from_slice(extra);
        let (child, ready) = super::cluster::spawn_daemon(&args, session.path(), &[])?;
        let (address, token) = match ready.as_slice() {
            [_, _, _, _, address, _, token_file, ..] => (
                address.clone(),
                std::fs::read_to_string(token_file)
                    .with_context(|| format!("cannot read the head's token file {token_file}"))?
                    .trim()
                    .to_string(),
            ),
            _ => bail!("unexpected ready line from the head: {ready:?}"),
        };
        Ok(HeadProcess {
            child,
            address,
            token,
            session,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The session directory it records itself in.
    pub fn session_dir(&self) -> &std::path::Path {
        self.session.path()
    }

    /// CPU seconds (user + system) the head has used.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .context("reading the head's /proc stat")?;
        let after_name = stat.rsplit_once(')').context("malformed /proc stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / per_second)
    }

    /// The head's memory now.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading the head's /proc status")?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in the head's /proc status"))?;
            let kib: f64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("malformed {line:?}"))?;
            Ok(kib / 1024.0)
        };
        Ok(Memory {
            rss_mib: field("VmRSS:")?,
            peak_mib: field("VmHWM:")?,
        })
    }
}

impl Drop for HeadProcess {
    /// Asks the head to stop as `oxray stop` does (it then removes its
    /// shared memory and spill files), and makes sure after a few seconds.
    fn drop(&mut self) {
        super::cluster::stop_daemon(&mut self.child);
    }
}
