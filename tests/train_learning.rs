//! Short learning runs with fixed seeds: PPO on CartPole must lift the
//! mean return above 150, in the driver and with EnvRunner and Learner actors;
//! so must IMPALA's V-trace policy gradient, DQN and SAC's categorical policy;
//! PPO and SAC must lift Pendulum's far above an untrained policy's.
//! Wall time is not asserted here; `scripts/bench-ppo.sh` measures it.

mod train_support;

use oxray_rl::metrics::{
    Metrics, ALPHA_VALUE, CURR_EPSILON, CURR_KL_COEFF, ENTROPY, EPISODE_RETURN_MEAN, MEAN_KL_LOSS,
    POLICY_LOSS, VF_LOSS,
};
use oxray_trainers::run::{run, RunOptions};
use oxray_trainers::ExperimentConfig;

/// Trains the shipped `configs/NAME` with `overrides`; the last result.
fn train(name: &str, overrides: &[&str]) -> Metrics {
    let path = format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(path).unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config = ExperimentConfig::parse(&source, name, &overrides).unwrap();
    let results = tempfile::tempdir().unwrap();
    let summary = run(
        RunOptions {
            config,
            name: "learning".into(),
            results_dir: results.path().to_path_buf(),
            resume: None,
        },
        |_| {},
    )
    .unwrap();
    summary.last_result
}

fn train_until_150(overrides: &[&str]) -> f64 {
    let mut all = vec![
        "seed=3",
        "stop.episode_return_mean=150",
        "stop.env_steps=60000",
    ];
    all.extend_from_slice(overrides);
    train("ppo-cartpole.yaml", &all)[EPISODE_RETURN_MEAN]
}

#[test]
fn ppo_cartpole_return_rises_above_150_in_the_driver() {
    let return_mean = train_until_150(&[]);
    assert!(return_mean >= 150.0, "return mean {return_mean}");
}

#[test]
fn ppo_cartpole_learns_with_env_runner_and_learner_actors() {
    oxray_core::init(oxray_core::InitOptions::default().num_cpus(2.0)).unwrap();
    let return_mean = train_until_150(&[
        "env_runners.num_env_runners=2",
        "env_runners.num_envs_per_env_runner=8",
        "env_runners.num_cpus_per_env_runner=0.5",
        "learners.num_learners=1",
    ]);
    oxray_core::shutdown();
    assert!(return_mean >= 150.0, "return mean {return_mean}");
}

/// Without the KL term in PPO's loss its coefficient stays as configured
/// (as RLlib's): the mean KL is then not computed, and adapting to its
/// absence would halve the reported `curr_kl_coeff` every iteration.
#[test]
fn ppo_keeps_its_kl_coefficient_without_the_kl_loss() {
    let result = train(
        "ppo-cartpole.yaml",
        &[
            "training.use_kl_loss=false",
            "training.kl_coeff=0.3",
            "stop.training_iteration=3",
            "checkpoint.checkpoint_at_end=false",
        ],
    );
    assert_eq!(result[CURR_KL_COEFF], 0.3);
}

/// The shipped DQN config (double Q, dueling head, 3-step returns,
/// prioritized replay; on a CPU its gradient steps run on the host) lifts
/// CartPole's mean return above 150 (an untrained ε-greedy policy scores
/// about 20).
#[test]
fn dqn_cartpole_return_rises_above_150() {
    let result = train(
        "dqn-cartpole.yaml",
        &[
            "seed=3",
            "stop.episode_return_mean=150",
            "stop.env_steps=50000",
            "checkpoint.checkpoint_at_end=false",
        ],
    );
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= 150.0, "return mean {return_mean}");
}

/// The same config with C51's distributional head (51 atoms on [0, 100])
/// lifts the mean return above 100, five times an untrained policy's.
#[test]
fn dqn_with_a_distributional_head_learns_cartpole() {
    let result = train(
        "dqn-cartpole.yaml",
        &[
            "seed=3",
            "training.num_atoms=51",
            "training.v_min=0",
            "training.v_max=100",
            "stop.episode_return_mean=100",
            "stop.env_steps=40000",
            "checkpoint.checkpoint_at_end=false",
        ],
    );
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= 100.0, "return mean {return_mean}");
}

/// The same config with NoisyNets' head instead of ε-greedy exploration
/// lifts the mean return above 100.
#[test]
fn dqn_with_noisy_nets_learns_cartpole() {
    let result = train(
        "dqn-cartpole.yaml",
        &[
            "seed=3",
            "training.noisy=true",
            "stop.episode_return_mean=100",
            "stop.env_steps=40000",
            "checkpoint.checkpoint_at_end=false",
        ],
    );
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= 100.0, "return mean {return_mean}");
    assert!(!result.contains_key(CURR_EPSILON), "ε is not used");
}

/// Stable-Baselines3 zoo's DQN settings (a [256, 256] Q-network, 64-row
/// minibatches) with a Learner of two CPUs, whose gradient steps split each
/// minibatch's rows over two threads: the mean return still rises above
/// 150.
#[test]
fn dqn_with_its_steps_split_over_two_threads_learns_cartpole() {
    // Two where the machine has them (an embedded cluster refuses a Learner
    // more CPUs than it has).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = format!("learners.num_cpus_per_learner={}", cores.min(2));
    let result = train(
        "peers/dqn-sb3-cartpole.yaml",
        &[
            "seed=1",
            &cpus,
            "stop.episode_return_mean=150",
            "stop.env_steps=60000",
            "checkpoint.checkpoint_at_end=false",
        ],
    );
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= 150.0, "return mean {return_mean}");
}

/// The shipped Pendulum config must lift the mean return above −500 (an
/// untrained Gaussian policy scores about −1200 to −1400) within 150k steps;
/// every 200-step episode ends by truncation, so this also exercises the
/// bootstrap of truncated episodes.
#[test]
fn ppo_trains_a_gaussian_policy_on_pendulum() {
    let result = train(
        "ppo-pendulum.yaml",
        &[
            "seed=3",
            "stop.episode_return_mean=-500",
            "stop.env_steps=150000",
        ],
    );
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= -500.0, "return mean {return_mean}");
    for key in [POLICY_LOSS, VF_LOSS, ENTROPY, MEAN_KL_LOSS] {
        let value = result[key];
        assert!(value.is_finite(), "{key} = {value}");
    }
}

/// The shipped SAC config must reach its target, a mean return of −250
/// over the last 5 episodes (RLlib's tuned example's window), within 8000
/// env steps (40 episodes, the first before learning starts); an untrained
/// policy scores about −1200 to −1500 per episode. α must have been tuned
/// down from its initial 1.
#[test]
fn sac_trains_a_squashed_gaussian_policy_on_pendulum() {
    let result = train("sac-pendulum.yaml", &["seed=0", "stop.env_steps=8000"]);
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= -250.0, "return mean {return_mean}");
    let alpha = result[ALPHA_VALUE];
    assert!(alpha > 0.0 && alpha < 0.5, "alpha {alpha}");
}

/// SAC on a Discrete space (`configs/sac-cartpole.yaml`: a categorical
/// policy, expectations over both actions taken exactly) lifts CartPole's
/// mean return above 150 within 30k env steps (it reaches 450 within 100k);
/// an untrained policy scores about 20. α must have been tuned down from
/// its initial 1, as the policy's entropy fell towards the 0.3-nat target
/// from the uniform policy's ln 2.
#[test]
fn sac_trains_a_categorical_policy_on_cartpole() {
    let result = train(
        "sac-cartpole.yaml",
        &[
            "seed=1",
            "stop.episode_return_mean=150",
            "stop.env_steps=30000",
            "checkpoint.checkpoint_at_end=false",
        ],
    );
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= 150.0, "return mean {return_mean}");
    let (alpha, entropy) = (result[ALPHA_VALUE], result[ENTROPY]);
    assert!(alpha > 0.0 && alpha < 0.5, "alpha {alpha}");
    assert!(entropy < 0.6, "entropy {entropy}");
}

/// The shipped IMPALA config, sampling in the driver to keep the test short
/// (asynchronous sampling is `train_checkpoint`'s
/// `impala_learns_asynchronously_resumes_and_evaluates`), must lift
/// CartPole's mean return above 150 within 100k env steps; an untrained
/// policy scores about 20.
#[test]
fn impala_cartpole_return_rises_above_150() {
    let result = train(
        "impala-cartpole.yaml",
        &[
            "seed=1",
            "env_runners.num_env_runners=0",
            "stop.episode_return_mean=150",
            "stop.env_steps=100000",
        ],
    );
    let return_mean = result[EPISODE_RETURN_MEAN];
    assert!(return_mean >= 150.0, "return mean {return_mean}");
    for key in [POLICY_LOSS, VF_LOSS, ENTROPY] {
        let value = result[key];
        assert!(value.is_finite(), "{key} = {value}");
    }
}
