//! Remote EnvRunners sample synchronously by default (every action drawn
//! with the weights sent last, as in RLlib's PPO), one version behind when
//! sampling ahead, and continuously with a bounded queue of requests when
//! asynchronous (APPO); DQN's ε-greedy module explores through the same
//! runners.

use oxray_core::InitOptions;
use oxray_envs::env_config::EnvConfig;
use oxray_rl::env_runner::{module_spec, EnvRunnerConfig};
use oxray_rl::env_runner_group::{EnvRunnerGroup, Sampling};
use oxray_rl::rl_module::{ModelConfig, ModuleKind};

fn config(kind: ModuleKind) -> EnvRunnerConfig {
    let env = EnvConfig::new("CartPole-v1");
    EnvRunnerConfig {
        module: module_spec(&env, &ModelConfig::default(), kind).unwrap(),
        env,
        num_envs: 2,
        rollout_fragment_length: 8,
        seed: 5,
        worker_index: 0,
        explore: true,
        record_to: None,
    }
}

#[test]
fn remote_runners_sample_with_the_weights_their_mode_promises() {
    oxray_core::init(InitOptions::default().num_cpus(2.0)).unwrap();
    let config = config(ModuleKind::ActorCritic);
    let weights = config.module.build(tch::Device::Cpu).flat_weights();
    for (sampling, lag) in [(Sampling::Synchronous, 0), (Sampling::Ahead, 1)] {
        let mut group = EnvRunnerGroup::new(&config, 2, 0.5, sampling).unwrap();
        group.sync_weights(1, weights.clone(), 0).unwrap();
        let first = group.sample().unwrap();
        assert!(first.iter().all(|r| r.weights_version == 1));
        for version in 2..4 {
            group.sync_weights(version, weights.clone(), 0).unwrap();
            let rollouts = group.sample().unwrap();
            assert_eq!(rollouts.len(), 2);
            for rollout in rollouts {
                assert_eq!(rollout.weights_version, version - lag, "{sampling:?}");
                assert_eq!(rollout.batch.len(), 16);
            }
        }
    }
    asynchronous_runners_pick_up_new_weights_after_their_queued_samples(&config);
    oxray_core::shutdown();
}

/// Asynchronous runners never wait for weights: each keeps
/// `max_requests_in_flight` samples queued, so after new weights are sent at
/// most that many rollouts per runner still come from the old ones, and
/// every later one uses the new weights.
fn asynchronous_runners_pick_up_new_weights_after_their_queued_samples(config: &EnvRunnerConfig) {
    let weights = config.module.build(tch::Device::Cpu).flat_weights();
    let (runners, depth) = (2, 3);
    let sampling = Sampling::Asynchronous {
        max_requests_in_flight: depth,
    };
    let mut group = EnvRunnerGroup::new(config, runners, 0.5, sampling).unwrap();
    group.sync_weights(1, weights.clone(), 0).unwrap();
    let mut versions = Vec::new();
    while versions.len() < 4 {
        let ready = group.sample().unwrap();
        assert!(!ready.is_empty(), "a call returns at least one rollout");
        versions.extend(ready.iter().map(|r| r.weights_version));
    }
    assert!(versions.iter().all(|&v| v == 1), "{versions:?}");
    group.sync_weights(2, weights, 0).unwrap();
    let mut after = Vec::new();
    while after.iter().filter(|&&v| v == 2).count() < 2 * runners {
        after.extend(group.sample().unwrap().iter().map(|r| r.weights_version));
    }
    let old = after.iter().filter(|&&v| v == 1).count();
    assert!(old <= runners * depth, "{old} old rollouts in {after:?}");
}
