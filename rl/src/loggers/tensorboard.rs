//! TensorBoard output of a run, what Tune's `TBXLoggerCallback` gives an
//! RLlib user plus what CleanRL users look at:
//!
//! - every numeric result key as a scalar,
//! - the config as HParams (dotted keys such as `training.lr`, the names
//!   `--set` takes), so the runs of a sweep line up in the HParams tab next to
//!   their final metrics,
//! - the config YAML as text (tag `config`),
//! - histograms (sampled actions, advantages, weights) when the algorithm
//!   hands them over.
//!
//! The step of everything is `num_env_steps_sampled_lifetime`, as in RLlib,
//! so runs with different batch sizes share an x axis; an offline
//! algorithm, which samples nothing, steps by the recorded steps it trained
//! on (`num_env_steps_trained_lifetime`) instead of piling every iteration
//! onto step 0. Each call is flushed
//! before it returns, so a live run shows up in TensorBoard at once.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::event_file::EventFileWriter;
use super::summary::{HParamValue, Summary};
use crate::metrics::{Histograms, Metrics, ProgressSteps};

/// The text summary holding the config YAML.
pub const CONFIG_TEXT_TAG: &str = "config";

pub struct TensorBoardLogger {
    events: EventFileWriter,
}

impl TensorBoardLogger {
    /// Starts a new event file in `dir`; earlier files (of a resumed run) stay
    /// and TensorBoard reads them all as one run.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(TensorBoardLogger {
            events: EventFileWriter::create(dir)?,
        })
    }

    pub fn path(&self) -> &Path {
        self.events.path()
    }

    /// `config` (the resolved experiment config) as HParams and its YAML
    /// `text` as a text summary.
    pub fn log_config(&mut self, config: &serde_json::Value, text: &str) -> io::Result<()> {
        let mut hparams = BTreeMap::new();
        flatten(config, String::new(), &mut hparams);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.events
            .write_summary(0, Summary::session_start(hparams, now))?;
        // Indented four spaces: a Markdown code block, so the Text tab keeps
        // the YAML's layout.
        let markdown: String = text.lines().map(|line| format!("    {line}\n")).collect();
        self.events
            .write_summary(0, Summary::text(CONFIG_TEXT_TAG, &markdown))?;
        self.events.flush()
    }

    /// Every value of `result` as a scalar.
    pub fn log_result(&mut self, result: &Metrics) -> io::Result<()> {
        let scalars = result.iter().map(|(key, value)| (key.as_str(), *value));
        self.events
            .write_summary(step(result), Summary::scalars(scalars))?;
        self.events.flush()
    }

    /// `histograms` at the step of `result`, the iteration they belong to.
    pub fn log_histograms(&mut self, result: &Metrics, histograms: &Histograms) -> io::Result<()> {
        for (tag, values) in histograms {
            self.events
                .write_summary(step(result), Summary::histogram(tag, values))?;
        }
        self.events.flush()
    }
}

fn step(result: &Metrics) -> i64 {
    ProgressSteps::of(result).count() as i64
}

/// Leaves of `value` under dotted keys. HParams hold numbers, strings and
/// booleans: `null` becomes the string `null` (so "unset" is a value one can
/// filter on) and lists their compact JSON (`[64,64]`).
fn flatten(value: &serde_json::Value, key: String, out: &mut BTreeMap<String, HParamValue>) {
    use serde_json::Value as Json;
    let leaf = match value {
        Json::Object(fields) => {
            for (name, field) in fields {
                let dotted = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                flatten(field, dotted, out);
            }
            return;
        }
        Json::Number(n) => HParamValue::number(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => HParamValue::string(s.as_str()),
        Json::Bool(b) => HParamValue::bool(*b),
        Json::Null => HParamValue::string("null"),
        Json::Array(_) => HParamValue::string(value.to_string()),
    };
    out.insert(key, leaf);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::loggers::event_file::read;
    use crate::loggers::summary::{HParamKind, HParamsPluginData, Value, What};
    use crate::metrics::{NUM_ENV_STEPS_SAMPLED_LIFETIME, NUM_ENV_STEPS_TRAINED_LIFETIME};

    fn summaries(dir: &Path) -> Vec<(i64, Summary)> {
        read::events(dir)
            .into_iter()
            .filter_map(|event| match event.what {
                Some(What::Summary(summary)) => Some((event.step, summary)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn config_becomes_dotted_hparams_and_yaml_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut logger = TensorBoardLogger::open(dir.path()).unwrap();
        let config = serde_json::json!({
            "algorithm": "PPO",
            "training": {"lr": 0.002, "use_kl_loss": false, "grad_clip": null},
            "model": {"fcnet_hiddens": [64, 64]},
        });
        logger
            .log_config(&config, "algorithm: PPO\ntraining:\n  lr: 0.002\n")
            .unwrap();
        let summaries = summaries(dir.path());
        let [(0, hparams), (0, text)] = summaries.as_slice() else {
            panic!("{summaries:?}")
        };
        let value = &hparams.value[0];
        assert_eq!(value.tag, "_hparams_/session_start_info");
        let plugin = value
            .metadata
            .as_ref()
            .unwrap()
            .plugin_data
            .as_ref()
            .unwrap();
        assert_eq!(plugin.plugin_name, "hparams");
        let data = HParamsPluginData::decode(plugin.content.as_slice()).unwrap();
        let hparams = data.session_start_info.unwrap().hparams;
        let kind = |key: &str| hparams[key].kind.clone().unwrap();
        assert_eq!(kind("algorithm"), HParamKind::String("PPO".into()));
        assert_eq!(kind("training.lr"), HParamKind::Number(0.002));
        assert_eq!(kind("training.use_kl_loss"), HParamKind::Bool(false));
        assert_eq!(
            kind("training.grad_clip"),
            HParamKind::String("null".into())
        );
        assert_eq!(
            kind("model.fcnet_hiddens"),
            HParamKind::String("[64,64]".into())
        );
        assert_eq!(hparams.len(), 5);

        let value = &text.value[0];
        assert_eq!(value.tag, CONFIG_TEXT_TAG);
        let Some(Value::Tensor(tensor)) = &value.value else {
            panic!("{value:?}")
        };
        assert_eq!(
            tensor.string_val,
            [b"    algorithm: PPO\n    training:\n      lr: 0.002\n".to_vec()]
        );
    }

    #[test]
    fn results_and_histograms_step_by_env_steps_sampled() {
        let dir = tempfile::tempdir().unwrap();
        let mut logger = TensorBoardLogger::open(dir.path()).unwrap();
        let result = Metrics::from([
            (NUM_ENV_STEPS_SAMPLED_LIFETIME.into(), 4096.0),
            ("env_runners/episode_return_mean".into(), 21.5),
        ]);
        logger.log_result(&result).unwrap();
        let histograms = Histograms::from([("env_runners/sampled_actions".into(), vec![0.0, 1.0])]);
        logger.log_histograms(&result, &histograms).unwrap();
        let summaries = summaries(dir.path());
        assert_eq!(summaries.len(), 2);
        assert!(summaries.iter().all(|(step, _)| *step == 4096));
        let tags: Vec<&str> = summaries[0]
            .1
            .value
            .iter()
            .map(|v| v.tag.as_str())
            .collect();
        assert_eq!(
            tags,
            [
                "env_runners/episode_return_mean",
                NUM_ENV_STEPS_SAMPLED_LIFETIME
            ]
        );
        let Some(Value::Histo(histo)) = &summaries[1].1.value[0].value else {
            panic!("{:?}", summaries[1])
        };
        assert_eq!(histo.num, 2.0);
    }

    /// An offline run's iterations step by what they trained on, not all
    /// at step 0.
    #[test]
    fn an_offline_run_steps_by_the_rows_it_trained_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut logger = TensorBoardLogger::open(dir.path()).unwrap();
        for trained in [2560.0, 5120.0] {
            let result = Metrics::from([
                (NUM_ENV_STEPS_SAMPLED_LIFETIME.into(), 0.0),
                (NUM_ENV_STEPS_TRAINED_LIFETIME.into(), trained),
            ]);
            logger.log_result(&result).unwrap();
        }
        let steps: Vec<i64> = summaries(dir.path())
            .iter()
            .map(|(step, _)| *step)
            .collect();
        assert_eq!(steps, [2560, 5120]);
    }
}
