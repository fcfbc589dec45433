//! The dashboard's HTML: a page shell per view and the fragments inside it.
//!
//! Pages are rendered on the server, complete on first load; the small
//! script in `assets/dashboard.js` then re-fetches each `.live` fragment once
//! a second and swaps it in, so a table is written once, here, and there is
//! no client-side templating (and no Node toolchain) to keep in step.
//! Charts are drawn by the vendored `assets/chart.js` from the JSON API.

use crate::jobs::JobDetails;
use crate::training::TrainingRun;
use oxray_core::ClusterStatus;
use std::fmt::Write;

/// The views, in the order of the navigation bar: (path, title).
pub const VIEWS: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/actors", "Actors"),
    ("/tasks", "Tasks"),
    ("/placement-groups", "Placement groups"),
    ("/logs", "Logs"),
    ("/training", "Training"),
];

/// A fragment that a page shows and refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    Summary,
    Nodes,
    Jobs,
    Actors,
    Tasks,
    PlacementGroups,
    Logs,
    Training,
}

impl Fragment {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "summary" => Fragment::Summary,
            "nodes" => Fragment::Nodes,
            "jobs" => Fragment::Jobs,
            "actors" => Fragment::Actors,
            "tasks" => Fragment::Tasks,
            "placement-groups" => Fragment::PlacementGroups,
            "logs" => Fragment::Logs,
            "training" => Fragment::Training,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Fragment::Summary => "summary",
            Fragment::Nodes => "nodes",
            Fragment::Jobs => "jobs",
            Fragment::Actors => "actors",
            Fragment::Tasks => "tasks",
            Fragment::PlacementGroups => "placement-groups",
            Fragment::Logs => "logs",
            Fragment::Training => "training",
        }
    }
}

/// What fragments are rendered from: one snapshot of everything.
pub struct View<'a> {
    pub status: &'a ClusterStatus,
    pub jobs: &'a [JobDetails],
    pub runs: &'a [TrainingRun],
    /// File names under the session's `logs/`.
    pub log_files: &'a [String],
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: navigation, then `body`.
pub fn page(title: &str, active: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, name) in VIEWS {
        let class = if path == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{path}\"{class}>{name}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} · oxray</title>\
         <link rel=\"stylesheet\" href=\"/static/dashboard.css\">\
         <script src=\"/static/chart.js\" defer></script>\
         <script src=\"/static/dashboard.js\" defer></script></head>\
         <body><header><span class=\"brand\">oxray</span><nav>{nav}</nav>\
         <form method=\"post\" action=\"/logout\"><button>Log out</button></form></header>\
         <main><h1>{title}</h1>{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// The login form; `refused` says the last token was wrong.
pub fn login(refused: bool) -> String {
    let message = if refused {
        "<p class=\"error\" id=\"login-error\">Wrong token: access refused.</p>"
    } else {
        ""
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in · oxray</title>\
         <link rel=\"stylesheet\" href=\"/static/dashboard.css\"></head>\
         <body class=\"login\"><main><h1>oxray dashboard</h1>{message}\
         <form method=\"post\" action=\"/login\"><label>Cluster token \
         <input type=\"password\" name=\"token\" id=\"token\" autofocus></label>\
         <button type=\"submit\" id=\"login\">Log in</button></form>\
         <p class=\"hint\">The token is in the session directory's <code>token</code> file \
         (printed by <code>oxray start --head</code>).</p></main></body></html>\n"
    )
}

/// A `.live` container holding `fragment`, refreshed by the page script.
pub fn live(fragment: Fragment, view: &View) -> String {
    format!(
        "<div class=\"live\" data-fragment=\"/fragments/{}\" id=\"{}\">{}</div>",
        fragment.name(),
        fragment.name(),
        render(fragment, view)
    )
}

pub fn render(fragment: Fragment, view: &View) -> String {
    match fragment {
        Fragment::Summary => summary(view),
        Fragment::Nodes => nodes(view.status),
        Fragment::Jobs => jobs(view),
        Fragment::Actors => actors(view.status),
        Fragment::Tasks => tasks(view.status),
        Fragment::PlacementGroups => placement_groups(view.status),
        Fragment::Logs => logs(view),
        Fragment::Training => training(view.runs),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", escape(empty));
    }
    let mut html = String::from("<table><thead><tr>");
    for header in headers {
        let _ = write!(html, "<th>{}</th>", escape(header));
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    html
}

fn state_badge(state: &str) -> String {
    format!(
        "<span class=\"state state-{}\">{}</span>",
        escape(&state.to_lowercase()),
        escape(state)
    )
}

fn summary(view: &View) -> String {
    let status = view.status;
    let alive = status.nodes.iter().filter(|n| n.alive).count();
    let actors_alive = status.actors.iter().filter(|a| a.state == "ALIVE").count();
    let jobs_running = view.jobs.iter().filter(|j| !j.status.is_terminal()).count();
    let cards = [
        ("Nodes alive", alive.to_string()),
        ("Actors alive", actors_alive.to_string()),
        ("Tasks running", status.running_tasks.to_string()),
        ("Tasks pending", status.pending_tasks.to_string()),
        ("Objects", status.objects.to_string()),
        ("Jobs running", jobs_running.to_string()),
    ];
    let mut html = String::from("<div class=\"cards\">");
    for (label, value) in cards {
        let _ = write!(
            html,
            "<div class=\"card\"><div class=\"value\">{value}</div><div class=\"label\">{label}</div></div>"
        );
    }
    html.push_str("</div>");
    html
}

fn usage(used: f64, total: f64, bytes: bool) -> String {
    let fraction = if total > 0.0 { used / total } else { 0.0 };
    let show = |v: f64| {
        if bytes {
            format!("{:.1} GiB", v / f64::from(1u32 << 30))
        } else {
            format!("{v}")
        }
    };
    format!(
        "<div class=\"bar\"><div style=\"width:{:.0}%\"></div></div>{} / {}",
        fraction * 100.0,
        show(used),
        show(total)
    )
}

fn nodes(status: &ClusterStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|node| {
            let used = |name: &str| node.total.get(name) - node.available.get(name);
            vec![
                format!("<code>{}</code>", escape(&node.node_id)),
                escape(&node.address),
                state_badge(if node.alive { "ALIVE" } else { "DEAD" }),
                if node.is_head { "head" } else { "" }.into(),
                usage(used("CPU"), node.total.get("CPU"), false),
                usage(used("GPU"), node.total.get("GPU"), false),
                usage(used("memory"), node.total.get("memory"), true),
                format!(
                    "{:.1} MiB",
                    node.object_store_bytes as f64 / f64::from(1u32 << 20)
                ),
                node.workers.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "Node",
            "Address",
            "State",
            "Role",
            "CPU",
            "GPU",
            "Memory",
            "Object store",
            "Workers",
        ],
        &rows,
        "No nodes.",
    )
}

fn time(ms: u64) -> String {
    format!("<time data-ms=\"{ms}\">{ms}</time>")
}

fn jobs(view: &View) -> String {
    let submitted: Vec<Vec<String>> = view
        .jobs
        .iter()
        .rev()
        .map(|job| {
            vec![
                format!(
                    "<a href=\"/jobs/{0}\"><code>{0}</code></a>",
                    escape(&job.submission_id)
                ),
                state_badge(job.status.as_str()),
                format!("<code>{}</code>", escape(&job.entrypoint)),
                time(job.start_time),
                job.end_time.map_or_else(String::new, time),
                job.driver_exit_code
                    .map_or_else(String::new, |c| c.to_string()),
                escape(&job.message),
            ]
        })
        .collect();
    let drivers: Vec<Vec<String>> = view
        .status
        .jobs
        .iter()
        .map(|driver| {
            vec![
                format!("<code>{}</code>", escape(&driver.job_id)),
                state_badge(if driver.running {
                    "RUNNING"
                } else {
                    "FINISHED"
                }),
                driver.driver_pid.to_string(),
                time(driver.started_at * 1000),
                escape(&driver.executable),
            ]
        })
        .collect();
    format!(
        "<h2>Submitted jobs</h2>{}<h2>Drivers</h2>{}",
        table(
            &[
                "Submission id",
                "Status",
                "Entrypoint",
                "Started",
                "Ended",
                "Exit code",
                "Message"
            ],
            &submitted,
            "No jobs submitted yet: oxray job submit -- CMD",
        ),
        table(
            &["Job id", "State", "Driver pid", "Started", "Executable"],
            &drivers,
            "No driver has joined yet.",
        )
    )
}

/// One job's details (the job page's live part).
pub fn job_details(job: &JobDetails) -> String {
    let rows = vec![
        vec!["Status".into(), state_badge(job.status.as_str())],
        vec!["Message".into(), escape(&job.message)],
        vec![
            "Entrypoint".into(),
            format!("<code>{}</code>", escape(&job.entrypoint)),
        ],
        vec![
            "Working directory".into(),
            escape(job.runtime_env.working_dir.as_deref().unwrap_or("")),
        ],
        vec![
            "Driver pid".into(),
            job.driver_pid.map_or_else(String::new, |p| p.to_string()),
        ],
        vec![
            "Exit code".into(),
            job.driver_exit_code
                .map_or_else(String::new, |c| c.to_string()),
        ],
        vec!["Started".into(), time(job.start_time)],
        vec!["Ended".into(), job.end_time.map_or_else(String::new, time)],
        vec!["Log file".into(), escape(&job.log_path)],
    ];
    table(&["", ""], &rows, "")
}

fn actors(status: &ClusterStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .actors
        .iter()
        .map(|actor| {
            vec![
                format!("<code>{}</code>", actor.actor_id),
                escape(&actor.class),
                escape(actor.name.as_deref().unwrap_or("")),
                state_badge(&actor.state),
                format!(
                    "<code>{}</code>",
                    escape(actor.node_id.as_deref().unwrap_or(""))
                ),
                actor.restarts.to_string(),
            ]
        })
        .collect();
    table(
        &["Actor", "Class", "Name", "State", "Node", "Restarts"],
        &rows,
        "No actors.",
    )
}

fn tasks(status: &ClusterStatus) -> String {
    let counts: Vec<Vec<String>> = oxray_core::TaskState::ALL
        .iter()
        .map(|state| {
            let count = status.tasks.iter().filter(|t| t.state == *state).count();
            vec![state_badge(state.as_str()), count.to_string()]
        })
        .collect();
    let row = |task: &oxray_core::TaskRow| {
        vec![
            format!("<code>{}</code>", task.task_id),
            escape(&task.name),
            state_badge(task.state.as_str()),
            format!(
                "<code>{}</code>",
                escape(task.node_id.as_deref().unwrap_or(""))
            ),
            task.worker_pid.map_or_else(String::new, |p| p.to_string()),
            task.attempts.to_string(),
            format!(
                "<span class=\"error\">{}</span>",
                escape(task.error.as_deref().unwrap_or(""))
            ),
        ]
    };
    const SHOWN: usize = 50;
    let failed: Vec<Vec<String>> = status
        .tasks
        .iter()
        .rev()
        .filter(|t| t.state == oxray_core::TaskState::Failed)
        .take(SHOWN)
        .map(row)
        .collect();
    let recent: Vec<Vec<String>> = status.tasks.iter().rev().take(SHOWN).map(row).collect();
    let headers = [
        "Task",
        "Name",
        "State",
        "Node",
        "Worker pid",
        "Attempts",
        "Error",
    ];
    format!(
        "{}<h2>Failed tasks</h2>{}<h2>Recent tasks</h2>{}",
        table(&["State", "Tasks"], &counts, ""),
        table(&headers, &failed, "No failed tasks."),
        table(&headers, &recent, "No tasks yet.")
    )
}

fn placement_groups(status: &ClusterStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .placement_groups
        .iter()
        .map(|group| {
            let bundles: Vec<String> = group
                .bundles
                .iter()
                .map(|(resources, node)| {
                    format!(
                        "{} on <code>{}</code>",
                        escape(&resources.to_string()),
                        escape(node.as_deref().unwrap_or("-"))
                    )
                })
                .collect();
            vec![
                group.id.to_string(),
                escape(&format!("{:?}", group.strategy)),
                state_badge(&group.state),
                bundles.join("<br>"),
            ]
        })
        .collect();
    table(
        &["Id", "Strategy", "State", "Bundles"],
        &rows,
        "No placement groups.",
    )
}

fn logs(view: &View) -> String {
    let rows: Vec<Vec<String>> = view
        .log_files
        .iter()
        .map(|name| {
            vec![format!(
                "<a href=\"#\" class=\"log-link\" data-log=\"/api/logs/{0}\">{0}</a>",
                escape(name)
            )]
        })
        .collect();
    table(&["Log file"], &rows, "No log files yet.")
}

fn training(runs: &[TrainingRun]) -> String {
    let figure = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .filter_map(|run| {
            let latest = run.latest()?;
            Some(vec![
                format!(
                    "<a href=\"/jobs/{0}\"><code>{0}</code></a>",
                    escape(&run.submission_id)
                ),
                escape(&run.run_dir),
                latest.iteration.to_string(),
                latest.env_steps.to_string(),
                figure(latest.episode_return_mean),
                figure(latest.evaluation_return_mean),
                figure(latest.env_steps_per_s),
                figure(latest.learner_steps_per_s),
            ])
        })
        .collect();
    table(
        &[
            "Job",
            "Run directory",
            "Iteration",
            "Env steps",
            "Episode return mean",
            "Evaluation return mean",
            "Env steps/s",
            "Learner steps/s",
        ],
        &rows,
        "No training runs: submit `oxray train CONFIG` as a job.",
    )
}

/// The body of each view.
pub fn view_body(path: &str, view: &View) -> String {
    match path {
        "/" => format!(
            "{}<h2>Nodes</h2>{}<h2>Resource use</h2>\
             <div class=\"charts\" id=\"resource-charts\" data-history=\"/api/history\">\
             <canvas data-resource=\"CPU\" width=\"460\" height=\"220\"></canvas>\
             <canvas data-resource=\"GPU\" width=\"460\" height=\"220\"></canvas>\
             <canvas data-resource=\"memory\" width=\"460\" height=\"220\"></canvas></div>",
            live(Fragment::Summary, view),
            live(Fragment::Nodes, view)
        ),
        "/jobs" => live(Fragment::Jobs, view),
        "/actors" => live(Fragment::Actors, view),
        "/tasks" => live(Fragment::Tasks, view),
        "/placement-groups" => live(Fragment::PlacementGroups, view),
        "/logs" => format!(
            "{}<h2 id=\"log-title\">Select a log</h2><pre class=\"log\" id=\"log\"></pre>",
            live(Fragment::Logs, view)
        ),
        _ => format!(
            "{}<div class=\"charts\" id=\"training-charts\" data-training=\"/api/training\">\
             <canvas data-figure=\"episode_return_mean\" width=\"460\" height=\"240\"></canvas>\
             <canvas data-figure=\"evaluation_return_mean\" width=\"460\" height=\"240\"></canvas>\
             <canvas data-figure=\"env_steps_per_s\" width=\"460\" height=\"240\"></canvas>\
             <canvas data-figure=\"learner_steps_per_s\" width=\"460\" height=\"240\"></canvas></div>",
            live(Fragment::Training, view)
        ),
    }
}

/// The page of one job: its details, refreshed, and its log, followed.
pub fn job_page(job: &JobDetails) -> String {
    let id = escape(&job.submission_id);
    let body = format!(
        "<div class=\"live\" data-fragment=\"/fragments/job/{id}\" id=\"job\">{}</div>\
         <h2>Log</h2><pre class=\"log\" id=\"log\" data-follow=\"/api/jobs/{id}/logs\"></pre>",
        job_details(job)
    );
    page(&format!("Job {}", job.submission_id), "/jobs", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
