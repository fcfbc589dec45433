//! Which of a run's checkpoints stay on disk: Ray's `CheckpointConfig`
//! (`num_to_keep`, `checkpoint_score_attribute`, `checkpoint_score_order`).
//!
//! After each save the run hands the new checkpoint and its iteration's
//! result here. Beyond `num_to_keep`, the checkpoints ranked lowest by the
//! score attribute (the oldest, without one) are removed. The newest is
//! never removed, whatever its score, so `checkpoints/latest` always
//! resolves and `--resume` goes on from where the run stopped (Ray keeps
//! the latest checkpoint for the same reason): with a score attribute,
//! `num_to_keep` + 1 may be on disk.
//!
//! A resumed run finds its earlier checkpoints by name
//! (`checkpoint_<iteration>`) and their scores in its `result.json` (one
//! line per iteration), so the count and the ranking carry across resumes.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use oxray_rl::loggers::json::FILE_NAME as JSON_RESULTS_FILE;
use oxray_rl::metrics::{Metrics, TRAINING_ITERATION};

use crate::config::{CheckpointConfig, ScoreOrder};

/// A checkpoint on disk, as retention ranks it.
#[derive(Debug)]
struct Kept {
    iteration: u64,
    path: PathBuf,
    /// The score attribute in the iteration's result; absent ranks lowest.
    score: Option<f64>,
}

#[derive(Debug)]
pub struct Retention {
    num_to_keep: Option<usize>,
    score_attribute: Option<String>,
    order: ScoreOrder,
    kept: Vec<Kept>,
}

/// A checkpoint that could not be removed: training goes on with it on disk.
#[derive(Debug, thiserror::Error)]
#[error("cannot remove the old checkpoint {}: {error}", path.display())]
pub struct NotRemoved {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl Retention {
    /// Retention for the run in `run_dir`, which already holds the
    /// checkpoints and `result.json` of earlier sessions when it resumes.
    pub fn open(config: &CheckpointConfig, run_dir: &Path) -> Retention {
        let mut retention = Retention {
            num_to_keep: config.num_to_keep,
            score_attribute: config.checkpoint_score_attribute.clone(),
            order: config.checkpoint_score_order,
            kept: Vec::new(),
        };
        if retention.num_to_keep.is_some() {
            let scores = retention.scores_logged(run_dir);
            retention.kept = checkpoints_in(&run_dir.join("checkpoints"))
                .into_iter()
                .map(|(iteration, path)| Kept {
                    iteration,
                    path,
                    score: scores.get(&iteration).copied(),
                })
                .collect();
        }
        retention
    }

    /// `path` was just saved at `iteration`, whose result is `result` (none
    /// for the last good state of a diverged run): removes what falls out.
    pub fn saved(
        &mut self,
        path: &Path,
        iteration: u64,
        result: Option<&Metrics>,
    ) -> Result<(), NotRemoved> {
        let Some(num_to_keep) = self.num_to_keep else {
            return Ok(());
        };
        let score = self
            .score_attribute
            .as_ref()
            .and_then(|attribute| result?.get(attribute).copied())
            .filter(|score| score.is_finite());
        self.kept.retain(|kept| kept.iteration != iteration);
        self.kept.push(Kept {
            iteration,
            path: path.to_path_buf(),
            score,
        });
        let newest = self.kept.iter().map(|kept| kept.iteration).max();
        // Best first: by score in the configured order (unscored last), then
        // by recency, which alone ranks them without a score attribute
        // (every score is then absent).
        let rank = |kept: &Kept| {
            kept.score
                .map_or(f64::NEG_INFINITY, |s| self.order.oriented(s))
        };
        self.kept.sort_by(|a, b| {
            rank(b)
                .total_cmp(&rank(a))
                .then(b.iteration.cmp(&a.iteration))
        });
        let mut index = 0;
        let mut first_error = None;
        self.kept.retain(|kept| {
            index += 1;
            if index <= num_to_keep || Some(kept.iteration) == newest {
                return true;
            }
            match fs::remove_dir_all(&kept.path) {
                Ok(()) => false,
                Err(error) => {
                    first_error.get_or_insert(NotRemoved {
                        path: kept.path.clone(),
                        error,
                    });
                    true
                }
            }
        });
        first_error.map_or(Ok(()), Err)
    }

    /// The score attribute of every iteration logged in `run_dir`'s
    /// `result.json`, by iteration.
    fn scores_logged(&self, run_dir: &Path) -> HashMap<u64, f64> {
        let Some(attribute) = &self.score_attribute else {
            return HashMap::new();
        };
        let Ok(text) = fs::read_to_string(run_dir.join(JSON_RESULTS_FILE)) else {
            return HashMap::new();
        };
        text.lines()
            .filter_map(|line| {
                let result: serde_json::Value = serde_json::from_str(line).ok()?;
                let iteration = result.get(TRAINING_ITERATION)?.as_f64()? as u64;
                Some((iteration, result.get(attribute)?.as_f64()?))
            })
            .collect()
    }
}

/// The `checkpoint_<iteration>` directories in `dir`, with their iterations.
fn checkpoints_in(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| {
            let name = entry.file_name();
            let iteration = name.to_str()?.strip_prefix("checkpoint_")?.parse().ok()?;
            Some((iteration, entry.path()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory with empty `checkpoint_<i>` directories for
    /// `iterations`, and `result.json` lines giving `score` per iteration.
    fn run_dir(iterations: &[u64], scores: &[(u64, f64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for i in iterations {
            fs::create_dir_all(checkpoint(dir.path(), *i)).unwrap();
        }
        let lines: String = scores
            .iter()
            .map(|(i, score)| format!("{{\"{TRAINING_ITERATION}\": {i}, \"score\": {score}}}\n"))
            .collect();
        fs::write(dir.path().join(JSON_RESULTS_FILE), lines).unwrap();
        dir
    }

    fn checkpoint(run_dir: &Path, iteration: u64) -> PathBuf {
        run_dir.join(format!("checkpoints/checkpoint_{iteration:06}"))
    }

    fn on_disk(run_dir: &Path) -> Vec<u64> {
        let mut iterations: Vec<u64> = checkpoints_in(&run_dir.join("checkpoints"))
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        iterations.sort();
        iterations
    }

    fn config(num_to_keep: Option<usize>, score: Option<(&str, ScoreOrder)>) -> CheckpointConfig {
        CheckpointConfig {
            num_to_keep,
            checkpoint_score_attribute: score.map(|(key, _)| key.to_string()),
            checkpoint_score_order: score.map_or(ScoreOrder::Max, |(_, order)| order),
            ..CheckpointConfig::default()
        }
    }

    /// Saves iterations `from..=to` in turn, each with `score(i)`.
    fn save_each(
        retention: &mut Retention,
        run_dir: &Path,
        iterations: std::ops::RangeInclusive<u64>,
        score: impl Fn(u64) -> f64,
    ) {
        for i in iterations {
            let path = checkpoint(run_dir, i);
            fs::create_dir_all(&path).unwrap();
            let result = Metrics::from([("score".to_string(), score(i))]);
            retention.saved(&path, i, Some(&result)).unwrap();
        }
    }

    #[test]
    fn without_num_to_keep_every_checkpoint_stays() {
        let dir = run_dir(&[], &[]);
        let mut retention = Retention::open(&config(None, None), dir.path());
        save_each(&mut retention, dir.path(), 1..=5, |i| i as f64);
        assert_eq!(on_disk(dir.path()), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn without_a_score_the_most_recent_stay() {
        let dir = run_dir(&[], &[]);
        let mut retention = Retention::open(&config(Some(2), None), dir.path());
        save_each(&mut retention, dir.path(), 1..=5, |i| -(i as f64));
        assert_eq!(on_disk(dir.path()), [4, 5]);
    }

    /// The best by score stay, in either order, and the newest with them
    /// even when it scores worst; a checkpoint whose result lacks the
    /// attribute ranks below every scored one.
    #[test]
    fn the_best_by_score_stay_and_the_newest_with_them() {
        let returns = [10.0, 50.0, 30.0, 40.0, 20.0];
        // max: 50 and 40 (iterations 2 and 4), and the newest, 5; min: 10 and
        // 20 (1 and 5, the newest among them).
        for (order, expected) in [
            (ScoreOrder::Max, &[2, 4, 5][..]),
            (ScoreOrder::Min, &[1, 5]),
        ] {
            let dir = run_dir(&[], &[]);
            let mut retention =
                Retention::open(&config(Some(2), Some(("score", order))), dir.path());
            save_each(&mut retention, dir.path(), 1..=5, |i| {
                returns[i as usize - 1]
            });
            assert_eq!(on_disk(dir.path()), expected, "{order:?}");
        }
        let dir = run_dir(&[], &[]);
        let mut retention = Retention::open(
            &config(Some(1), Some(("score", ScoreOrder::Max))),
            dir.path(),
        );
        save_each(&mut retention, dir.path(), 1..=1, |_| 5.0);
        let unscored = checkpoint(dir.path(), 2);
        fs::create_dir_all(&unscored).unwrap();
        retention.saved(&unscored, 2, None).unwrap();
        save_each(&mut retention, dir.path(), 3..=3, |_| 1.0);
        assert_eq!(on_disk(dir.path()), [1, 3], "the unscored one went first");
    }

    /// A resumed run counts the checkpoints already on disk and ranks them by
    /// the scores its `result.json` logged.
    #[test]
    fn a_resumed_run_ranks_the_checkpoints_of_earlier_sessions() {
        let dir = run_dir(&[2, 4], &[(1, 0.0), (2, 90.0), (3, 0.0), (4, 10.0)]);
        let mut retention = Retention::open(
            &config(Some(2), Some(("score", ScoreOrder::Max))),
            dir.path(),
        );
        save_each(&mut retention, dir.path(), 6..=6, |_| 50.0);
        assert_eq!(on_disk(dir.path()), [2, 6]);
        save_each(&mut retention, dir.path(), 8..=8, |_| 5.0);
        assert_eq!(on_disk(dir.path()), [2, 6, 8], "8 is the newest");
        save_each(&mut retention, dir.path(), 10..=10, |_| 70.0);
        assert_eq!(on_disk(dir.path()), [2, 10]);
    }
}
