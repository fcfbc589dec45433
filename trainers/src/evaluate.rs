//! Policy evaluation from a checkpoint: the policy it holds, on the env its
//! config names, for a number of whole episodes.
//!
//! It reuses the EnvRunner (one sub-env, so episodes are counted in the order
//! they finish without favouring short ones) with the RLModule the
//! checkpoint's algorithm trains, and only needs the weights, so it works for
//! every algorithm. With an output directory it also records the episodes it
//! plays (`offline_data`), the data an offline algorithm such as BC learns
//! from.

use std::path::{Path, PathBuf};

use oxray_rl::checkpoint;
use oxray_rl::env_runner::{module_spec, EnvRunner, EnvRunnerConfig, EvaluationDuration};
use oxray_rl::offline_data::EpisodeWriter;

use crate::algorithm::TrainError;
use crate::config::ExperimentConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub env: String,
    pub returns: Vec<f64>,
    pub lengths: Vec<f64>,
    /// The file the episodes were recorded in, when asked to.
    pub recorded: Option<PathBuf>,
}

impl Evaluation {
    /// (mean, min, max)
    pub fn stats(values: &[f64]) -> (f64, f64, f64) {
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, min, max)
    }
}

/// Runs `episodes` episodes with the checkpoint's policy, greedy unless
/// `explore`, recording them in a new file under `output` if given.
pub fn evaluate(
    path: &Path,
    episodes: usize,
    seed: u64,
    explore: bool,
    output: Option<&Path>,
) -> Result<Evaluation, TrainError> {
    let saved = checkpoint::load_policy(path)?;
    let config = ExperimentConfig::of_checkpoint(&saved)?;
    let kind = config.training.training().module_kind();
    let mut runner = EnvRunner::new(EnvRunnerConfig {
        env: config.env.clone(),
        num_envs: 1,
        rollout_fragment_length: 1,
        module: module_spec(&config.env, &config.model, kind)?,
        seed,
        worker_index: 0,
        explore,
        record_to: None,
    })?;
    runner.load_weights(saved.learner.weights)?;
    let duration = EvaluationDuration::Episodes(episodes as u64);
    let (played, recorded) = match output {
        None => (runner.evaluate(duration)?, None),
        Some(dir) => {
            let mut writer = EpisodeWriter::create(dir).map_err(oxray_rl::Error::from)?;
            let played = runner.record(duration, &mut |episode| Ok(writer.write(&episode)?))?;
            let (file, _) = writer.finish().map_err(oxray_rl::Error::from)?;
            (played, Some(file))
        }
    };
    Ok(Evaluation {
        env: config.env.id,
        returns: played.returns.iter().map(|&r| f64::from(r)).collect(),
        lengths: played.lengths.iter().map(|&l| f64::from(l)).collect(),
        recorded,
    })
}
