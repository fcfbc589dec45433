//! Training runs of submitted jobs, read from the `result.json` files that
//! `oxray train` writes (one JSON object per iteration, RLlib's keys).
//!
//! The dashboard does not need the trainer to report anywhere: a job's runs
//! are the run directories under its working directory's `results/` whose
//! `result.json` changed after the job started. TensorBoard stays the place
//! for a run's full detail; this is the live glance at return and throughput.

use crate::jobs::JobDetails;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const EPISODE_RETURN_MEAN: &str = "env_runners/episode_return_mean";
pub const ENV_STEPS_PER_S: &str = "env_runners/num_env_steps_sampled_per_s";
pub const LEARNER_STEPS_PER_S: &str = "num_env_steps_trained_per_s";
pub const EVALUATION_RETURN_MEAN: &str = "evaluation/env_runners/episode_return_mean";
pub const ENV_STEPS: &str = "num_env_steps_sampled_lifetime";
pub const STEPS_TRAINED: &str = "num_env_steps_trained_lifetime";
pub const ITERATION: &str = "training_iteration";

/// One iteration's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingPoint {
    pub iteration: f64,
    pub env_steps: f64,
    /// What the charts plot against, as TensorBoard's step
    /// (`oxray_rl::metrics::ProgressSteps`): env steps sampled, or, for an
    /// offline run (BC, MARWIL, CQL, IQL), which samples none, the recorded steps
    /// trained on.
    pub steps: f64,
    pub episode_return_mean: Option<f64>,
    /// The latest evaluation's mean return (`evaluation:`), the measure of
    /// an offline run.
    pub evaluation_return_mean: Option<f64>,
    pub env_steps_per_s: Option<f64>,
    pub learner_steps_per_s: Option<f64>,
}

/// One run directory of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingRun {
    pub submission_id: String,
    pub run_dir: String,
    pub points: Vec<TrainingPoint>,
}

impl TrainingRun {
    pub fn latest(&self) -> Option<&TrainingPoint> {
        self.points.last()
    }
}

/// The runs of `jobs`, in job order.
pub fn runs(jobs: &[JobDetails]) -> Vec<TrainingRun> {
    let mut runs = Vec::new();
    for job in jobs {
        let Some(dir) = &job.runtime_env.working_dir else {
            continue;
        };
        let started = std::time::UNIX_EPOCH + std::time::Duration::from_millis(job.start_time);
        for result in result_files(&Path::new(dir).join("results")) {
            let fresh = std::fs::metadata(&result)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified >= started);
            if !fresh {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&result) else {
                continue;
            };
            runs.push(TrainingRun {
                submission_id: job.submission_id.clone(),
                run_dir: result
                    .parent()
                    .map_or_else(String::new, |p| p.display().to_string()),
                points: text.lines().filter_map(parse_point).collect(),
            });
        }
    }
    runs
}

/// `results/EXPERIMENT/RUN/result.json` files.
fn result_files(results: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for experiment in read_dirs(results) {
        for run in read_dirs(&experiment) {
            let file = run.join("result.json");
            if file.is_file() {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// One line of `result.json`; a line being written (cut short) is skipped.
fn parse_point(line: &str) -> Option<TrainingPoint> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let number = |key: &str| value.get(key).and_then(serde_json::Value::as_f64);
    let env_steps = number(ENV_STEPS).unwrap_or(0.0);
    Some(TrainingPoint {
        iteration: number(ITERATION)?,
        env_steps,
        steps: match env_steps > 0.0 {
            true => env_steps,
            false => number(STEPS_TRAINED).unwrap_or(0.0),
        },
        episode_return_mean: number(EPISODE_RETURN_MEAN),
        evaluation_return_mean: number(EVALUATION_RETURN_MEAN),
        env_steps_per_s: number(ENV_STEPS_PER_S),
        learner_steps_per_s: number(LEARNER_STEPS_PER_S),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iterations_and_skips_a_line_cut_short() {
        let text = concat!(
            r#"{"training_iteration": 1, "num_env_steps_sampled_lifetime": 1024, "env_runners/episode_return_mean": 21.5, "env_runners/num_env_steps_sampled_per_s": 9000.0}"#,
            "\n",
            r#"{"training_iteration": 2, "num_env_steps_sampled_lifetime": 2048, "num_env_steps_trained_per_s": 50000.0}"#,
            "\n",
            r#"{"training_iteration": 3, "num_env"#,
        );
        let points: Vec<_> = text.lines().filter_map(parse_point).collect();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].episode_return_mean, Some(21.5));
        assert_eq!(points[0].env_steps_per_s, Some(9000.0));
        assert_eq!(points[1].env_steps, 2048.0);
        assert_eq!(points[1].episode_return_mean, None);
        assert_eq!(points[1].learner_steps_per_s, Some(50000.0));
        assert_eq!(points[1].steps, 2048.0, "online: env steps sampled");
    }

    /// An offline run samples nothing: its points go by the recorded steps
    /// it trained on, and its evaluation return is what measures it.
    #[test]
    fn an_offline_run_is_plotted_by_its_trained_steps() {
        let line = r#"{"training_iteration": 2, "num_env_steps_sampled_lifetime": 0, "num_env_steps_trained_lifetime": 128000, "evaluation/env_runners/episode_return_mean": -228.9}"#;
        let point = parse_point(line).unwrap();
        assert_eq!((point.env_steps, point.steps), (0.0, 128000.0));
        assert_eq!(point.evaluation_return_mean, Some(-228.9));
        assert_eq!(point.episode_return_mean, None);
    }
}
