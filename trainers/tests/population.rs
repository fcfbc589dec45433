//! Population based training through a real training run, with the order
//! of the trials' results fixed by the test (in `oxray train` they arrive
//! from threads in whatever order the machine runs them): a trial ranked
//! below one that saved a checkpoint goes on from that checkpoint with the
//! donor's config explored, in its own run directory.

use std::path::{Path, PathBuf};

use oxray_rl::metrics::{Metrics, NUM_ENV_STEPS_SAMPLED, TRAINING_ITERATION};
use oxray_trainers::algorithms::AlgorithmConfig;
use oxray_trainers::run::{run, run_scheduled, RunEvent, RunOptions, Schedule};
use oxray_trainers::trial_scheduler::{Decision, SchedulerConfig, TrialScheduler};
use oxray_trainers::ExperimentConfig;

const PPO: &str = "\
algorithm: PPO
env: CartPole-v1
seed: 1
env_runners:
  num_envs_per_env_runner: 8
model:
  fcnet_hiddens: [32]
training:
  lr: 1.0e-3
  train_batch_size: 256
  minibatch_size: 128
  num_epochs: 2
stop:
  iterations: 6
";

/// Ranked by the env steps each iteration samples (the batch size), every
/// iteration; the learning rate moves to a neighbour in its list.
const PBT: &str = "{type: pbt, time_attr: training_iteration, metric: \
    env_runners/num_env_steps_sampled, perturbation_interval: 1, quantile_fraction: 0.5, \
    resample_probability: 0, hyperparam_mutations: {training.lr: [5.0e-4, 1.0e-3, 2.0e-3]}}";

fn config(overrides: &[&str]) -> ExperimentConfig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::parse(PPO, "population.yaml", &overrides).unwrap()
}

fn options(config: ExperimentConfig, name: &str, dir: &Path) -> RunOptions {
    RunOptions {
        config,
        name: name.into(),
        results_dir: dir.to_path_buf(),
        resume: None,
    }
}

/// Trial 1's view of the search's scheduler. Trial 0 trained before it
/// started; that trial's latest result reaches the scheduler right after
/// trial 1's first, as when both train at once.
struct BottomTrial<'a> {
    scheduler: &'a mut TrialScheduler,
    top: Option<(Metrics, PathBuf, ExperimentConfig)>,
    decisions: Vec<String>,
}

impl Schedule for BottomTrial<'_> {
    fn on_result(&mut self, result: &Metrics) -> Decision {
        let decision = self.scheduler.on_result(1, result);
        if let Some((top_result, checkpoint, config)) = self.top.take() {
            assert_eq!(
                self.scheduler.on_result(0, &top_result),
                Decision::Checkpoint,
                "trial 0 ranks above trial 1"
            );
            self.scheduler.on_checkpoint(0, &checkpoint, &config);
        }
        self.decisions.push(match &decision {
            Decision::Continue => "continue".into(),
            Decision::Stop(why) => format!("stop: {why}"),
            Decision::Checkpoint => "checkpoint".into(),
            Decision::Exploit(exploit) => format!("exploit: {}", exploit.description),
        });
        decision
    }

    fn on_checkpoint(&mut self, checkpoint: &Path, config: &ExperimentConfig) {
        self.scheduler.on_checkpoint(1, checkpoint, config);
    }
}

/// (train_batch_size, lr) of a saved config.
fn params(path: &Path) -> (usize, f64) {
    let config =
        ExperimentConfig::parse(&std::fs::read_to_string(path).unwrap(), "params", &[]).unwrap();
    match config.training {
        AlgorithmConfig::Ppo(ppo) => (ppo.train_batch_size, ppo.lr),
        other => panic!("a PPO run saved {other:?}"),
    }
}

/// Per row of progress.csv: training_iteration, env steps sampled in it,
/// learning rate, env steps sampled in the run's lifetime.
fn progress(run: &Path) -> Vec<[f64; 4]> {
    let csv = std::fs::read_to_string(run.join("progress.csv")).unwrap();
    let mut lines = csv.lines().map(|line| line.split(',').collect::<Vec<_>>());
    let header = lines.next().unwrap();
    let column = |key: &str| header.iter().position(|k| *k == key).unwrap();
    let columns = [
        column(TRAINING_ITERATION),
        column(NUM_ENV_STEPS_SAMPLED),
        column("learners/default_policy/default_optimizer_learning_rate"),
        column("num_env_steps_sampled_lifetime"),
    ];
    lines
        .map(|row| columns.map(|at| row[at].parse::<f64>().unwrap()))
        .collect()
}

/// Trial 0 (batch 256) trains three iterations; ranked at its third
/// against trial 1's first (batch 128), it saves a checkpoint. Trial 1,
/// ranked below it at its second iteration, goes on from that checkpoint
/// with batch 256 and the learning rate moved to a neighbour, from the
/// donor's iteration and counters to the stop at 6; its run directory keeps
/// the config its first two iterations trained with. Tied with trial 0
/// afterwards, it ranks on top and clones no more.
#[test]
fn a_bottom_trial_goes_on_from_the_top_trials_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (top, bottom) = (config(&[]), config(&["training.train_batch_size=128"]));
    let mut scheduler =
        TrialScheduler::new(SchedulerConfig::parse(PBT).unwrap(), &[&top, &bottom], 0).unwrap();
    let donor = run(
        options(config(&["stop.iterations=3"]), "top", dir.path()),
        |_| {},
    )
    .unwrap();
    let mut trial = BottomTrial {
        scheduler: &mut scheduler,
        top: Some((donor.last_result, donor.checkpoint.unwrap(), top)),
        decisions: Vec::new(),
    };
    let mut exploited = Vec::new();
    let summary = run_scheduled(options(bottom, "bottom", dir.path()), &mut trial, |event| {
        if let RunEvent::Exploited(exploit) = event {
            exploited.push((exploit.description.clone(), exploit.tag.clone()));
        }
    })
    .unwrap();

    let [(description, tag)] = &exploited[..] else {
        panic!("one exploit expected: {exploited:?}");
    };
    assert!(
        description.starts_with(
            "clones trial 0 as of training_iteration 3 (env_runners/num_env_steps_sampled \
             128 below its 256; PBT): training.lr 0.001 -> "
        ),
        "{description}"
    );
    let new_lr = if description.ends_with("-> 0.0005") {
        assert_eq!(tag, "lr=5.000e-4");
        5e-4
    } else {
        assert!(description.ends_with("-> 0.002"), "{description}");
        assert_eq!(tag, "lr=2.000e-3");
        2e-3
    };
    assert_eq!(
        trial.decisions,
        [
            "continue".to_string(),
            format!("exploit: {description}"),
            "checkpoint".into(),
            "checkpoint".into(),
        ]
    );

    let run_dir = summary.run_dir;
    assert_eq!(params(&run_dir.join("params.yaml")), (256, new_lr));
    assert_eq!(
        params(&run_dir.join("params_000002.yaml")),
        (128, 1e-3),
        "the config of the iterations before the clone is kept"
    );
    let rows = progress(&run_dir);
    assert_eq!(
        rows[..2],
        [[1.0, 128.0, 1e-3, 128.0], [2.0, 128.0, 1e-3, 256.0]]
    );
    assert_eq!(
        rows[2..],
        [4.0, 5.0, 6.0].map(|i| [i, 256.0, new_lr, 256.0 * i]),
        "from the donor's counters: 3 iterations of 256 steps"
    );
    assert_eq!(summary.last_result[TRAINING_ITERATION], 6.0);
}
