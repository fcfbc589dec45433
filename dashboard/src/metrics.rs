//! `/metrics`: the cluster's state in Prometheus' text exposition format
//! (version 0.0.4), for scraping into Prometheus and Grafana.
//!
//! Everything is rendered from the same snapshot the pages show, at scrape
//! time, so a scrape costs one state snapshot and nothing is counted on the
//! hot path. Names follow Prometheus' conventions: an `oxray_` prefix, base
//! units, `_total` only on counters, states as labels
//! (`oxray_tasks{state="RUNNING"}`), and every known state present even at
//! zero so dashboards do not see series vanish.

use crate::jobs::{JobDetails, JobState};
use crate::training::TrainingRun;
use oxray_core::{ClusterStatus, TaskState};
use std::fmt::Write;

/// Actor states as `oxray list actors` shows them.
pub const ACTOR_STATES: [&str; 4] = ["PENDING_CREATION", "STARTING", "ALIVE", "DEAD"];
/// Placement group states.
pub const PLACEMENT_GROUP_STATES: [&str; 2] = ["PENDING", "CREATED"];

/// What one scrape shows.
pub struct Scrape<'a> {
    pub status: &'a ClusterStatus,
    pub jobs: &'a [JobDetails],
    pub runs: &'a [TrainingRun],
    /// The head's API request latencies by method.
    pub rpc: &'a std::collections::BTreeMap<&'static str, oxray_core::LatencyHistogram>,
}

/// Renders the exposition text.
pub fn render(scrape: &Scrape) -> String {
    let mut out = Exposition::default();
    let status = scrape.status;

    out.family("oxray_nodes", "gauge", "Nodes of the cluster by state.");
    let alive = status.nodes.iter().filter(|n| n.alive).count();
    out.sample("oxray_nodes", &[("state", "ALIVE")], alive as f64);
    let dead = status.nodes.len() - alive;
    out.sample("oxray_nodes", &[("state", "DEAD")], dead as f64);

    type NodeFigure = fn(&oxray_core::NodeStatus, &str, f64) -> f64;
    let node_figures: [(&str, &str, NodeFigure); 2] = [
        (
            "oxray_node_resource_total",
            "Resources a live node offers (CPU and GPU in units, memory in bytes).",
            |_, _, total| total,
        ),
        (
            "oxray_node_resource_used",
            "Resources held by tasks, actors and placement groups on a live node.",
            |node, resource, total| total - node.available.get(resource),
        ),
    ];
    for (name, help, figure) in node_figures {
        out.family(name, "gauge", help);
        for node in status.nodes.iter().filter(|n| n.alive) {
            for (resource, total) in &node.total.0 {
                let labels = [("node_id", node.node_id.as_str()), ("resource", resource)];
                out.sample(name, &labels, figure(node, resource, *total));
            }
        }
    }
    type StoreFigure = fn(&oxray_core::NodeStatus) -> u64;
    let store_figures: [(&str, &str, &str, StoreFigure); 5] = [
        (
            "oxray_node_object_store_bytes",
            "gauge",
            "Bytes of shared-memory objects stored on a live node (not spilled).",
            |node| node.object_store_bytes,
        ),
        (
            "oxray_object_store_capacity_bytes",
            "gauge",
            "A live node's object store capacity (--object-store-memory).",
            |node| node.object_store_capacity_bytes,
        ),
        (
            "oxray_object_store_spilled_bytes",
            "gauge",
            "Bytes of a live node's objects spilled to disk and not freed yet.",
            |node| node.spilled_bytes,
        ),
        (
            "oxray_object_store_spilled_bytes_total",
            "counter",
            "Bytes a live node spilled to disk since it joined.",
            |node| node.spilled_bytes_total,
        ),
        (
            "oxray_object_store_spilled_objects_total",
            "counter",
            "Objects a live node spilled to disk since it joined.",
            |node| node.spilled_objects_total,
        ),
    ];
    for (name, kind, help, figure) in store_figures {
        out.family(name, kind, help);
        for node in status.nodes.iter().filter(|n| n.alive) {
            let labels = [("node_id", node.node_id.as_str())];
            out.sample(name, &labels, figure(node) as f64);
        }
    }
    out.family(
        "oxray_node_workers",
        "gauge",
        "Worker processes (task workers and actors) on a live node.",
    );
    for node in status.nodes.iter().filter(|n| n.alive) {
        let labels = [("node_id", node.node_id.as_str())];
        out.sample("oxray_node_workers", &labels, node.workers as f64);
    }

    out.family(
        "oxray_tasks",
        "gauge",
        "Recent tasks (the head's task-event ring) by state.",
    );
    for state in TaskState::ALL {
        let count = status.tasks.iter().filter(|t| t.state == state).count();
        out.sample("oxray_tasks", &[("state", state.as_str())], count as f64);
    }

    out.family("oxray_actors", "gauge", "Actors by state.");
    for state in ACTOR_STATES {
        let count = status.actors.iter().filter(|a| a.state == state).count();
        out.sample("oxray_actors", &[("state", state)], count as f64);
    }

    out.family(
        "oxray_placement_groups",
        "gauge",
        "Placement groups by state.",
    );
    for state in PLACEMENT_GROUP_STATES {
        let count = status
            .placement_groups
            .iter()
            .filter(|g| g.state == state)
            .count();
        out.sample("oxray_placement_groups", &[("state", state)], count as f64);
    }

    out.family(
        "oxray_objects",
        "gauge",
        "Objects in the object store (values and pending results).",
    );
    out.sample("oxray_objects", &[], status.objects as f64);

    out.family(
        "oxray_drivers",
        "gauge",
        "Drivers that have joined the cluster, by state.",
    );
    let running = status.jobs.iter().filter(|j| j.running).count();
    out.sample("oxray_drivers", &[("state", "RUNNING")], running as f64);
    let finished = status.jobs.len() - running;
    out.sample("oxray_drivers", &[("state", "FINISHED")], finished as f64);

    out.family("oxray_jobs", "gauge", "Submitted jobs by status.");
    for state in JobState::ALL {
        let count = scrape.jobs.iter().filter(|j| j.status == state).count();
        out.sample("oxray_jobs", &[("status", state.as_str())], count as f64);
    }

    render_training(&mut out, scrape.runs);
    render_rpc(&mut out, scrape.rpc);
    out.text
}

/// `oxray_rpc_latency_seconds`: a histogram per request method.
fn render_rpc(
    out: &mut Exposition,
    rpc: &std::collections::BTreeMap<&'static str, oxray_core::LatencyHistogram>,
) {
    const NAME: &str = "oxray_rpc_latency_seconds";
    out.family(
        NAME,
        "histogram",
        "Time from a worker's or driver's API request reaching the head to its answer.",
    );
    for (method, histogram) in rpc {
        let bounds = oxray_core::RPC_LATENCY_BUCKETS.iter().map(f64::to_string);
        let counts = histogram.cumulative.iter();
        for (bound, count) in bounds.zip(counts) {
            let labels = [("method", *method), ("le", bound.as_str())];
            out.sample(&format!("{NAME}_bucket"), &labels, *count as f64);
        }
        let labels = [("method", *method), ("le", "+Inf")];
        out.sample(&format!("{NAME}_bucket"), &labels, histogram.count as f64);
        let labels = [("method", *method)];
        out.sample(&format!("{NAME}_sum"), &labels, histogram.sum_seconds);
        out.sample(&format!("{NAME}_count"), &labels, histogram.count as f64);
    }
}

/// The latest iteration of every training run of a submitted job.
fn render_training(out: &mut Exposition, runs: &[TrainingRun]) {
    type Figure = fn(&crate::training::TrainingPoint) -> Option<f64>;
    let figures: [(&str, &str, &str, Figure); 5] = [
        (
            "oxray_train_episode_return_mean",
            "gauge",
            "Mean episode return over the last 100 episodes of a training run.",
            |p| p.episode_return_mean,
        ),
        (
            "oxray_train_evaluation_return_mean",
            "gauge",
            "Mean return of a training run's latest evaluation.",
            |p| p.evaluation_return_mean,
        ),
        (
            "oxray_train_env_steps_per_second",
            "gauge",
            "Environment steps sampled per second in a run's latest iteration.",
            |p| p.env_steps_per_s,
        ),
        (
            "oxray_train_learner_env_steps_per_second",
            "gauge",
            "Environment steps the learner trained on per second in the latest iteration.",
            |p| p.learner_steps_per_s,
        ),
        (
            "oxray_train_env_steps_sampled_total",
            "counter",
            "Environment steps a training run has sampled.",
            |p| Some(p.env_steps),
        ),
    ];
    for (name, kind, help, figure) in figures {
        out.family(name, kind, help);
        for run in runs {
            let Some(value) = run.latest().and_then(figure) else {
                continue;
            };
            let labels = [
                ("submission_id", run.submission_id.as_str()),
                ("run_dir", run.run_dir.as_str()),
            ];
            out.sample(name, &labels, value);
        }
    }
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_values_are_prometheus_numbers() {
        let mut out = Exposition::default();
        out.sample("m", &[("path", "a\"b\\c\nd")], f64::INFINITY);
        out.sample("m", &[], 2.5);
        assert_eq!(out.text, "m{path=\"a\\\"b\\\\c\\nd\"} +Inf\nm 2.5\n");
    }
}
