//! Remote EnvRunners sample synchronously by default (every action drawn
//! with the weights sent last, as in RLlib's PPO), and one version behind
//! when sampling ahead; DQN's ε-greedy module explores through the same
//! runners.

use oxray_core::InitOptions;
use oxray_envs::env_config::EnvConfig;
use oxray_rl::env_runner::{module_spec, EnvRunnerConfig};
use oxray_rl::env_runner_group::EnvRunnerGroup;
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
    }
}

#[test]
fn remote_runners_sample_with_the_latest_weights_unless_sampling_ahead() {
    oxray_core::init(InitOptions::default().num_cpus(2.0)).unwrap();
    let config = config(ModuleKind::ActorCritic);
    let weights = config.module.build(tch::Device::Cpu).flat_weights();
    for (sample_ahead, lag) in [(false, 0), (true, 1)] {
        let mut group = EnvRunnerGroup::new(&config, 2, 0.5, sample_ahead).unwrap();
        group.sync_weights(1, weights.clone(), 0).unwrap();
        let first = group.sample().unwrap();
        assert!(first.iter().all(|r| r.weights_version == 1));
        for version in 2..4 {
            group.sync_weights(version, weights.clone(), 0).unwrap();
            let rollouts = group.sample().unwrap();
            assert_eq!(rollouts.len(), 2);
            for rollout in rollouts {
                assert_eq!(
                    rollout.weights_version,
                    version - lag,
                    "sample_ahead {sample_ahead}"
                );
                assert_eq!(rollout.batch.len(), 16);
            }
        }
    }
    oxray_core::shutdown();
}
