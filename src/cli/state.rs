//! `oxray list` and `oxray summary`: the state API, one row per node, job,
//! actor, task, object, placement group or worker, as `ray list` and
//! `ray summary` show them.
//!
//! Every listing is built as rows of named fields from one snapshot of the
//! head's state, so filtering (`--filter key=value`), `--limit`, `--detail`
//! and both formats (an aligned table for people, JSON for scripts) work the
//! same way for every kind of row.

use super::cluster::{connect, StatusArgs};
use anyhow::bail;
use clap::{Args, ValueEnum};
use oxray_core::{daemon, ClusterStatus};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Listing {
    Nodes,
    Jobs,
    Actors,
    Tasks,
    Objects,
    PlacementGroups,
    Workers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Summarized {
    Tasks,
    Actors,
    Objects,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// What to list.
    what: Listing,
    /// Keep rows whose KEY is VALUE (or with `KEY!=VALUE`, is not);
    /// repeatable, all must hold.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Show at most this many rows.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Show every column (resources, timestamps, errors, ...).
    #[arg(long)]
    detail: bool,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cluster: StatusArgs,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// What to summarize.
    what: Summarized,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    cluster: StatusArgs,
}

/// One field of a row; `detail` fields show only with `--detail`.
struct Field {
    name: &'static str,
    value: Value,
    detail: bool,
}

type Row = Vec<Field>;

fn field(name: &'static str, value: impl Into<Value>) -> Field {
    Field {
        name,
        value: value.into(),
        detail: false,
    }
}

fn detail(name: &'static str, value: impl Into<Value>) -> Field {
    Field {
        name,
        value: value.into(),
        detail: true,
    }
}

fn resources(set: &oxray_core::ResourceSet) -> Value {
    json!(set.0)
}

fn rows(what: Listing, state: &ClusterStatus) -> Vec<Row> {
    match what {
        Listing::Nodes => state
            .nodes
            .iter()
            .map(|node| {
                let used: serde_json::Map<String, Value> = node
                    .total
                    .0
                    .iter()
                    .map(|(name, total)| (name.clone(), json!(total - node.available.get(name))))
                    .collect();
                vec![
                    field("node_id", node.node_id.clone()),
                    field("state", if node.alive { "ALIVE" } else { "DEAD" }),
                    field("is_head_node", node.is_head),
                    field("address", node.address.clone()),
                    field("workers", node.workers),
                    field("object_store_bytes", node.object_store_bytes),
                    detail(
                        "object_store_capacity_bytes",
                        json!(node.object_store_capacity_bytes),
                    ),
                    detail("spilled_bytes", json!(node.spilled_bytes)),
                    field("resources_total", resources(&node.total)),
                    detail("resources_used", Value::Object(used)),
                ]
            })
            .collect(),
        Listing::Jobs => state
            .jobs
            .iter()
            .map(|job| {
                vec![
                    field("job_id", job.job_id.clone()),
                    field("state", if job.running { "RUNNING" } else { "FINISHED" }),
                    field("driver_pid", job.driver_pid),
                    field("namespace", job.namespace.clone()),
                    field("start_time", job.started_at),
                    field("end_time", job.ended_at),
                    field("executable", job.executable.clone()),
                ]
            })
            .collect(),
        Listing::Actors => state
            .actors
            .iter()
            .map(|actor| {
                vec![
                    field("actor_id", actor.actor_id.to_string()),
                    field("class_name", actor.class.clone()),
                    field("name", actor.name.clone()),
                    field("state", actor.state.clone()),
                    field("job_id", actor.job_id.clone()),
                    field("node_id", actor.node_id.clone()),
                    field("pid", actor.pid),
                    field("num_restarts", actor.restarts),
                    field(
                        "lifetime",
                        if actor.detached {
                            "detached"
                        } else {
                            "non_detached"
                        },
                    ),
                ]
            })
            .collect(),
        Listing::PlacementGroups => state
            .placement_groups
            .iter()
            .map(|group| {
                let bundles: Vec<Value> = group
                    .bundles
                    .iter()
                    .map(|(set, node)| json!({ "resources": set.0, "node_id": node }))
                    .collect();
                vec![
                    field("placement_group_id", group.id),
                    field("strategy", format!("{:?}", group.strategy).to_uppercase()),
                    field("state", group.state.clone()),
                    field("bundles", bundles.len()),
                    detail("bundle_specs", Value::Array(bundles)),
                ]
            })
            .collect(),
        Listing::Tasks => state
            .tasks
            .iter()
            .map(|task| {
                vec![
                    field("task_id", task.task_id.to_string()),
                    field("name", task.name.clone()),
                    field("state", task.state.as_str()),
                    field("type", task.task_type.as_str()),
                    field("node_id", task.node_id.clone()),
                    field("worker_pid", task.worker_pid),
                    field("error", task.error.clone()),
                    detail("actor_id", task.actor_id.map(|a| a.to_string())),
                    detail("worker_id", task.worker_id.map(|w| w.to_string())),
                    detail("required_resources", resources(&task.required_resources)),
                    detail("attempts", task.attempts),
                    detail("submitted_at_ms", task.submitted_at_ms),
                    detail("started_at_ms", task.started_at_ms),
                    detail("finished_at_ms", task.finished_at_ms),
                ]
            })
            .collect(),
        Listing::Objects => state
            .object_rows
            .iter()
            .map(|object| {
                vec![
                    field("object_id", object.object_id.to_string()),
                    field("state", object.state.clone()),
                    field("size_bytes", object.size_bytes),
                    field("node_id", object.node_id.clone()),
                    field("reference_count", object.reference_count),
                    field("type_name", object.type_name.clone()),
                    detail("in_shared_memory", object.in_shared_memory),
                    detail("producer_task", object.producer_task.map(|t| t.to_string())),
                ]
            })
            .collect(),
        Listing::Workers => state
            .workers
            .iter()
            .map(|worker| {
                vec![
                    field("worker_id", worker.worker_id.to_string()),
                    field("worker_type", worker.worker_type.clone()),
                    field("node_id", worker.node_id.clone()),
                    field("pid", worker.pid),
                    field("actor_id", worker.actor_id.map(|a| a.to_string())),
                    field("running_tasks", worker.running_tasks),
                    detail("executable", worker.executable.clone()),
                ]
            })
            .collect(),
    }
}

/// A `--filter`: a field, the value wanted, and whether it must differ.
struct Filter {
    key: String,
    value: String,
    negate: bool,
}

fn parse_filter(text: &str) -> anyhow::Result<Filter> {
    let (key, value, negate) = if let Some((key, value)) = text.split_once("!=") {
        (key, value, true)
    } else if let Some((key, value)) = text.split_once('=') {
        (key, value, false)
    } else {
        bail!("--filter {text}: expected KEY=VALUE or KEY!=VALUE");
    };
    if key.trim().is_empty() {
        bail!("--filter {text}: the key is empty");
    }
    Ok(Filter {
        key: key.trim().to_string(),
        value: value.trim().to_string(),
        negate,
    })
}

/// How a value reads in a table cell and in a filter.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Filter {
    fn keeps(&self, row: &Row) -> bool {
        let shown = row
            .iter()
            .find(|f| f.name == self.key)
            .map(|f| cell(&f.value))
            .unwrap_or_default();
        shown.eq_ignore_ascii_case(&self.value) != self.negate
    }
}

pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let filters = args
        .filters
        .iter()
        .map(|f| parse_filter(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (address, token) = connect(&args.cluster)?;
    let state = daemon::cluster_status(&address, &token)?;
    let all = rows(args.what, &state);
    if let Some(first) = all.first() {
        for filter in &filters {
            if !first.iter().any(|f| f.name == filter.key) {
                let names: Vec<&str> = first.iter().map(|f| f.name).collect();
                bail!(
                    "--filter {}: no such column; the columns are {}",
                    filter.key,
                    names.join(", ")
                );
            }
        }
    }
    let kept: Vec<Row> = all
        .into_iter()
        .filter(|row| filters.iter().all(|f| f.keeps(row)))
        .collect();
    let total = kept.len();
    let shown: Vec<Row> = kept
        .into_iter()
        .take(args.limit)
        .map(|row| {
            row.into_iter()
                .filter(|f| args.detail || !f.detail)
                .collect()
        })
        .collect();
    print_rows(&shown, args.format);
    if total > shown.len() {
        eprintln!(
            "(showing {} of {total} rows; raise --limit to see more)",
            shown.len()
        );
    }
    Ok(())
}

fn print_rows(rows: &[Row], format: Format) {
    match format {
        Format::Json => {
            let objects: Vec<Value> = rows
                .iter()
                .map(|row| {
                    Value::Object(
                        row.iter()
                            .map(|f| (f.name.to_string(), f.value.clone()))
                            .collect(),
                    )
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&objects).unwrap_or_default()
            );
        }
        Format::Table => {
            let Some(first) = rows.first() else {
                println!("(none)");
                return;
            };
            let header: Vec<String> = first.iter().map(|f| f.name.to_uppercase()).collect();
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| row.iter().map(|f| cell(&f.value)).collect())
                .collect();
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    cells
                        .iter()
                        .map(|r| r[i].len())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for line in std::iter::once(&header).chain(&cells) {
                let padded: Vec<String> = line
                    .iter()
                    .zip(&widths)
                    .map(|(text, width)| format!("{text:width$}"))
                    .collect();
                println!("{}", padded.join("  ").trim_end());
            }
        }
    }
}

/// `oxray summary`: counts by name and state.
pub fn summary(args: SummaryArgs) -> anyhow::Result<()> {
    let (address, token) = connect(&args.cluster)?;
    let state = daemon::cluster_status(&address, &token)?;
    let (listing, group_by) = match args.what {
        Summarized::Tasks => (Listing::Tasks, "name"),
        Summarized::Actors => (Listing::Actors, "class_name"),
        Summarized::Objects => (Listing::Objects, "type_name"),
    };
    let mut counts: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for row in rows(listing, &state) {
        let value = |name: &str| {
            row.iter()
                .find(|f| f.name == name)
                .map_or_else(|| "-".to_string(), |f| cell(&f.value))
        };
        *counts
            .entry(value(group_by))
            .or_default()
            .entry(value("state"))
            .or_default() += 1;
    }
    let rows: Vec<Row> = counts
        .into_iter()
        .map(|(name, states)| {
            let total: u64 = states.values().sum();
            vec![
                field(group_by, name),
                field("total", total),
                field("state_counts", json!(states)),
            ]
        })
        .collect();
    print_rows(&rows, args.format);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_shown_values_and_negate() {
        let row = vec![
            field("state", "FAILED"),
            field("name", "square"),
            field("worker_pid", 42),
            field("node_id", Value::Null),
        ];
        let keeps = |text: &str| parse_filter(text).unwrap().keeps(&row);
        assert!(keeps("state=FAILED"));
        assert!(keeps("state=failed"));
        assert!(!keeps("state!=FAILED"));
        assert!(keeps("name!=cube"));
        assert!(keeps("worker_pid=42"));
        assert!(keeps("node_id=-"));
        assert!(parse_filter("state").is_err());
        assert!(parse_filter("=x").is_err());
    }
}
