//! Offline data (RLlib's `offline_data`): episodes recorded from a policy,
//! written as JSON Lines, and read back as the (observation, action) rows an
//! offline algorithm such as behaviour cloning learns from, or as the n-step
//! transitions an offline Q-learner (CQL) replays.
//!
//! One line holds one whole episode:
//!
//! ```json
//! {"obs": [[...], ...], "actions": [[...], ...], "rewards": [...],
//!  "terminated": true, "truncated": false, "final_obs": [...]}
//! ```
//!
//! `obs[t]` is the observation the policy acted on at step t, `actions[t]`
//! its action (the action's values; a Discrete action is its index),
//! `rewards[t]` the reward that followed, and `final_obs` the observation
//! the episode ended in. Lines are independent, so a file can be read,
//! filtered or concatenated with any JSON tool (`jq`, `pandas.read_json(...,
//! lines=True)`), and a directory's files are read in name order. Each
//! recording session writes a file of its own (`episodes-<time>-<pid>-<n>.jsonl`,
//! created exclusively), so sessions never interleave or overwrite lines.
//!
//! Reading checks every row against the env the config trains on and names
//! the file and line of the first one that does not fit.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::obs_buffer::ObsDType;
use crate::replay_buffer::{NStep, Transition};
use crate::SampleBatch;

/// One recorded episode, a line of a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Episode {
    pub obs: Vec<Vec<f32>>,
    pub actions: Vec<Vec<f32>>,
    pub rewards: Vec<f32>,
    pub terminated: bool,
    pub truncated: bool,
    pub final_obs: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineDataError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}, line {line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: no recorded steps (expected .jsonl files of episodes)", path.display())]
    Empty { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OfflineDataError + '_ {
    move |error| OfflineDataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Appends episodes to a new file of its own in a directory.
pub struct EpisodeWriter {
    path: PathBuf,
    file: BufWriter<File>,
    episodes: usize,
}

impl EpisodeWriter {
    /// A new `episodes-<time>-<pid>-<n>.jsonl` in `dir` (created if
    /// missing).
    pub fn create(dir: &Path) -> Result<Self, OfflineDataError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        // The count tells apart the files one process creates within a
        // millisecond (and keeps them in the order they were created).
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let count = CREATED.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            "episodes-{millis}-{}-{count:04}.jsonl",
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(EpisodeWriter {
            path,
            file: BufWriter::new(file),
            episodes: 0,
        })
    }

    pub fn write(&mut self, episode: &Episode) -> Result<(), OfflineDataError> {
        let line = serde_json::to_string(episode).expect("episodes serialize");
        writeln!(self.file, "{line}").map_err(io(&self.path))?;
        self.episodes += 1;
        Ok(())
    }

    /// Hands what was written so far to the file.
    pub fn flush(&mut self) -> Result<(), OfflineDataError> {
        self.file.flush().map_err(io(&self.path))
    }

    /// Flushes and syncs the file; returns its path and the episodes in it.
    pub fn finish(self) -> Result<(PathBuf, usize), OfflineDataError> {
        let file = self.file.into_inner().map_err(|e| OfflineDataError::Io {
            path: self.path.clone(),
            error: e.into_error(),
        })?;
        file.sync_all().map_err(io(&self.path))?;
        Ok((self.path, self.episodes))
    }
}

/// Every recorded step of a file or directory, as training rows, episode
/// after episode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfflineDataset {
    pub obs_dim: usize,
    pub action_dim: usize,
    /// `[rows, obs_dim]`
    pub obs: Vec<f32>,
    /// `[rows, action_dim]`
    pub actions: Vec<f32>,
    pub rewards: Vec<f32>,
    /// Each episode's first row, and the row after the last one.
    pub episode_starts: Vec<usize>,
    /// Per episode: it was cut off (a time limit), not terminated.
    pub truncated: Vec<bool>,
    /// `[episodes, obs_dim]`: the observation each episode ended in.
    pub final_obs: Vec<f32>,
}

/// Per row, what its value target is made of:
/// `returns[t] + bootstrap_discounts[t] · V(final observation of episode[t])`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReturnsToGo {
    /// Σ_k γ^k r_{t+k} to the episode's end.
    pub returns: Vec<f32>,
    /// γ^(steps to the end) for a truncated episode, whose cut-off state
    /// still has a value; 0 for a terminated one.
    pub bootstrap_discounts: Vec<f32>,
    pub episode: Vec<u32>,
}

impl OfflineDataset {
    pub fn len(&self) -> usize {
        self.actions.len() / self.action_dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn episodes(&self) -> usize {
        self.truncated.len()
    }

    /// Each row's discounted return to its episode's end, and the discount
    /// of the value a truncated episode's last state still holds.
    pub fn returns_to_go(&self, gamma: f32) -> ReturnsToGo {
        let mut to_go = ReturnsToGo {
            returns: vec![0.0; self.len()],
            bootstrap_discounts: vec![0.0; self.len()],
            episode: vec![0; self.len()],
        };
        for (episode, rows) in self.episode_starts.windows(2).enumerate() {
            let (mut ret, mut discount) = (0.0, if self.truncated[episode] { 1.0 } else { 0.0 });
            for t in (rows[0]..rows[1]).rev() {
                ret = self.rewards[t] + gamma * ret;
                discount *= gamma;
                to_go.returns[t] = ret;
                to_go.bootstrap_discounts[t] = discount;
                to_go.episode[t] = episode as u32;
            }
        }
        to_go
    }

    /// Every row as an n-step transition, made by the replay buffer's own
    /// [`NStep`] from each episode in turn: up to `n` rewards summed with
    /// discount `gamma`, the observation after the last of them (the
    /// episode's final one at its end), terminal only where a terminated
    /// episode ends.
    pub fn transitions(&self, n: usize, gamma: f32) -> Vec<Transition> {
        let mut n_step = NStep::new(n, gamma);
        let mut out = Vec::with_capacity(self.len());
        for (episode, rows) in self.episode_starts.windows(2).enumerate() {
            if rows[1] > rows[0] {
                out.extend(n_step.add(&self.episode_batch(episode, rows[0]..rows[1])));
            }
        }
        out
    }

    /// Episode `episode`, rows `rows` (at least one), as one fragment that
    /// ends with it: terminated, or cut off at its final observation.
    fn episode_batch(&self, episode: usize, rows: Range<usize>) -> SampleBatch {
        let (d, a, len) = (self.obs_dim, self.action_dim, rows.len());
        let mut batch = SampleBatch::with_capacity(ObsDType::F32, d, a, len, 1);
        batch.obs.write(0, &self.obs[rows.start * d..rows.end * d]);
        batch.actions = self.actions[rows.start * a..rows.end * a].to_vec();
        batch.rewards = self.rewards[rows].to_vec();
        let (last, truncated) = (len - 1, self.truncated[episode]);
        batch.terminateds[last] = !truncated;
        batch.truncateds[last] = truncated;
        let final_obs = &self.final_obs[episode * d..(episode + 1) * d];
        batch.bootstrap_obs.write(0, final_obs);
        batch.final_index = vec![last as u32];
        batch.final_obs.extend_from_f32(final_obs.iter().copied());
        batch
    }

    /// Reads `path` (a `.jsonl` file, or a directory whose `.jsonl` files
    /// are read in name order), checking that every observation has
    /// `obs_dim` values and every action `action_dim`.
    pub fn read(path: &Path, obs_dim: usize, action_dim: usize) -> Result<Self, OfflineDataError> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = fs::read_dir(path)
                .map_err(io(path))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "jsonl"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut dataset = OfflineDataset {
            obs_dim,
            action_dim,
            episode_starts: vec![0],
            ..OfflineDataset::default()
        };
        for file in &files {
            dataset.read_file(file)?;
        }
        if dataset.is_empty() {
            return Err(OfflineDataError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(dataset)
    }

    fn read_file(&mut self, path: &Path) -> Result<(), OfflineDataError> {
        let file = File::open(path).map_err(io(path))?;
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io(path))?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| OfflineDataError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            };
            let episode: Episode = serde_json::from_str(&line).map_err(|e| {
                // serde_json's own position is within this line: the column.
                let message = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let message = message.strip_suffix(&suffix).unwrap_or(&message);
                bad(format!("not an episode (column {}): {message}", e.column()))
            })?;
            self.add(&episode).map_err(bad)?;
        }
        Ok(())
    }

    fn add(&mut self, episode: &Episode) -> Result<(), String> {
        let steps = episode.obs.len();
        if episode.actions.len() != steps || episode.rewards.len() != steps {
            return Err(format!(
                "{steps} observations, {} actions and {} rewards (one each per step)",
                episode.actions.len(),
                episode.rewards.len()
            ));
        }
        let rows = episode.obs.iter().zip(&episode.actions);
        for (step, (obs, action)) in rows.enumerate() {
            if obs.len() != self.obs_dim {
                return Err(format!(
                    "step {step}'s observation has {} values, the env's have {}",
                    obs.len(),
                    self.obs_dim
                ));
            }
            if action.len() != self.action_dim {
                return Err(format!(
                    "step {step}'s action has {} values, the env's have {}",
                    action.len(),
                    self.action_dim
                ));
            }
            if obs.iter().chain(action).any(|x| !x.is_finite()) {
                return Err(format!("step {step} has a value that is not finite"));
            }
        }
        if episode.final_obs.len() != self.obs_dim {
            return Err(format!(
                "the final observation has {} values, the env's have {}",
                episode.final_obs.len(),
                self.obs_dim
            ));
        }
        if let Some(step) = episode.rewards.iter().position(|r| !r.is_finite()) {
            return Err(format!("step {step}'s reward is not finite"));
        }
        for (obs, action) in episode.obs.iter().zip(&episode.actions) {
            self.obs.extend_from_slice(obs);
            self.actions.extend_from_slice(action);
        }
        self.rewards.extend_from_slice(&episode.rewards);
        self.episode_starts.push(self.rewards.len());
        self.truncated
            .push(episode.truncated && !episode.terminated);
        self.final_obs.extend_from_slice(&episode.final_obs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn episode(steps: usize, first: f32) -> Episode {
        Episode {
            obs: (0..steps).map(|t| vec![first + t as f32, -1.0]).collect(),
            actions: (0..steps).map(|t| vec![(t % 2) as f32]).collect(),
            rewards: vec![1.0; steps],
            terminated: true,
            truncated: false,
            final_obs: vec![first + steps as f32, -1.0],
        }
    }

    /// Two sessions write two files; reading the directory gives every
    /// step of both, the first session's first.
    #[test]
    fn episodes_written_by_two_sessions_read_back_as_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = EpisodeWriter::create(dir.path()).unwrap();
        first.write(&episode(3, 0.0)).unwrap();
        first.write(&episode(2, 10.0)).unwrap();
        let (first_path, count) = first.finish().unwrap();
        assert_eq!(count, 2);
        let mut second = EpisodeWriter::create(dir.path()).unwrap();
        second.write(&episode(1, 20.0)).unwrap();
        let (second_path, _) = second.finish().unwrap();
        assert_ne!(first_path, second_path);

        let data = OfflineDataset::read(dir.path(), 2, 1).unwrap();
        assert_eq!((data.len(), data.episodes()), (6, 3));
        assert_eq!(data.episode_starts, [0, 3, 5, 6]);
        let firsts: Vec<f32> = data.obs.chunks(2).map(|row| row[0]).collect();
        assert_eq!(firsts, [0.0, 1.0, 2.0, 10.0, 11.0, 20.0]);
        assert_eq!(data.actions, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(OfflineDataset::read(&first_path, 2, 1).unwrap().len(), 5);
    }

    /// Rewards 1, 2, 4 with γ = 0.5: returns to go 3, 4, 4; a
    /// terminated episode's last state is worth nothing, a truncated one's
    /// is discounted by γ^(steps to the end).
    #[test]
    fn returns_to_go_discount_to_each_episode_end() {
        let mut data = OfflineDataset {
            obs_dim: 2,
            action_dim: 1,
            episode_starts: vec![0],
            ..OfflineDataset::default()
        };
        let rewarded = |truncated: bool| Episode {
            rewards: vec![1.0, 2.0, 4.0],
            terminated: !truncated,
            truncated,
            ..episode(3, 0.0)
        };
        data.add(&rewarded(false)).unwrap();
        data.add(&rewarded(true)).unwrap();
        let to_go = data.returns_to_go(0.5);
        assert_eq!(to_go.returns, [3.0, 4.0, 4.0, 3.0, 4.0, 4.0]);
        assert_eq!(to_go.bootstrap_discounts, [0.0, 0.0, 0.0, 0.125, 0.25, 0.5]);
        assert_eq!(to_go.episode, [0, 0, 0, 1, 1, 1]);
    }

    /// Rewards 1, 2, 4 with γ = 0.5 and n = 2: each transition sums two
    /// rewards, or what is left of its episode; the terminated episode's
    /// last transitions are terminal and lead to its final observation, the
    /// truncated one's are not.
    #[test]
    fn transitions_sum_n_rewards_within_their_episode() {
        let mut data = OfflineDataset {
            obs_dim: 2,
            action_dim: 1,
            episode_starts: vec![0],
            ..OfflineDataset::default()
        };
        for (truncated, first) in [(false, 0.0), (true, 10.0)] {
            data.add(&Episode {
                rewards: vec![1.0, 2.0, 4.0],
                terminated: !truncated,
                truncated,
                ..episode(3, first)
            })
            .unwrap();
        }
        let transitions = data.transitions(2, 0.5);
        let column = |f: fn(&Transition) -> f32| transitions.iter().map(f).collect::<Vec<_>>();
        assert_eq!(column(|t| t.obs[0]), [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        assert_eq!(column(|t| t.reward), [2.0, 4.0, 4.0, 2.0, 4.0, 4.0]);
        assert_eq!(column(|t| t.discount), [0.25, 0.25, 0.5, 0.25, 0.25, 0.5]);
        assert_eq!(column(|t| t.next_obs[0]), [2.0, 3.0, 3.0, 12.0, 13.0, 13.0]);
        let terminal: Vec<bool> = transitions.iter().map(|t| t.terminated).collect();
        assert_eq!(terminal, [false, true, true, false, false, false]);
        assert_eq!(column(|t| t.action[0]), [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    }

    /// Each kind of bad line is named with its file and line number.
    #[test]
    fn a_line_that_does_not_fit_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        let good = serde_json::to_string(&episode(2, 0.0)).unwrap();
        let cases = [
            ("{\"obs\": 3}".to_string(), "line 2: not an episode"),
            (
                serde_json::to_string(&Episode {
                    rewards: vec![1.0],
                    ..episode(2, 0.0)
                })
                .unwrap(),
                "line 2: 2 observations, 2 actions and 1 rewards",
            ),
            (
                serde_json::to_string(&Episode {
                    obs: vec![vec![0.0, 1.0], vec![0.0, 1.0, 2.0]],
                    ..episode(2, 0.0)
                })
                .unwrap(),
                "line 2: step 1's observation has 3 values, the env's have 2",
            ),
            (
                good.replace("[1.0]", "[1.0,2.0]"),
                "line 2: step 1's action has 2 values, the env's have 1",
            ),
        ];
        for (line, expected) in cases {
            fs::write(&path, format!("{good}\n{line}\n")).unwrap();
            let error = OfflineDataset::read(&path, 2, 1).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(error.contains("bad.jsonl"), "{error}");
        }
        let empty = tempfile::tempdir().unwrap();
        let error = OfflineDataset::read(empty.path(), 2, 1).unwrap_err();
        assert!(matches!(error, OfflineDataError::Empty { .. }), "{error}");
    }
}
