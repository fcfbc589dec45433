//! Data-parallel PPO Learners on a two-node cluster (own loopback addresses): one update
//! by two Learner actors (one per node, averaging their gradients) gives the
//! weights one Learner gets from the whole batch, and a Learner whose node
//! dies fails the next update with an error instead of hanging it.

mod cluster_support;

use cluster_support::{kill_node, start_head, start_node, status};
use oxray::core::{self as oxray_core, InitOptions};
use oxray_rl::env_runner::{module_spec, EnvRunner, EnvRunnerConfig};
use oxray_rl::learner::LearnerConfig;
use oxray_rl::learner_group::{LearnerGroup, UpdateOutcome};
use oxray_rl::rl_module::{ModelConfig, ModuleKind};
use oxray_rl::SampleBatch;
use oxray_trainers::algorithms::ppo::{PpoConfig, PpoLearner, PpoLearnerConfig, UpdateParams};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tch::Tensor;

/// The tests here take turns: a process is the driver of one cluster at a
/// time (`oxray_core::init` refuses a second).
static ONE_DRIVER: Mutex<()> = Mutex::new(());

/// This process as the driver of the cluster at `address` until dropped.
struct Driver {
    _turn: MutexGuard<'static, ()>,
}

impl Driver {
    fn join(address: &str, token: &str) -> Driver {
        let turn = ONE_DRIVER.lock().unwrap_or_else(PoisonError::into_inner);
        oxray_core::init(InitOptions::default().address(address).token(token)).unwrap();
        Driver { _turn: turn }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        oxray_core::shutdown();
    }
}

fn learner_config() -> PpoLearnerConfig {
    let module = module_spec(
        &"CartPole-v1".into(),
        &ModelConfig::default(),
        ModuleKind::ActorCritic,
    )
    .unwrap();
    PpoLearnerConfig {
        learner: LearnerConfig {
            module,
            lr: 1e-3,
            grad_clip: Some(0.5),
            use_gpu: false,
            seed: 3,
        },
        training: PpoConfig {
            num_epochs: 2,
            // 200 rows in minibatches of 63: the last one has 11, which two
            // Learners split unevenly (5 and 6).
            minibatch_size: 63,
            use_kl_loss: true,
            normalize_advantages: true,
            entropy_coeff: 0.01,
            ..PpoConfig::default()
        },
    }
}

/// 4 CartPole envs × 50 steps, sampled with the initial policy.
fn fixed_batch(config: &PpoLearnerConfig) -> SampleBatch {
    let mut runner = EnvRunner::new(EnvRunnerConfig {
        env: "CartPole-v1".into(),
        num_envs: 4,
        rollout_fragment_length: 50,
        module: config.learner.module.clone(),
        seed: 11,
        worker_index: 0,
        explore: true,
        record_to: None,
    })
    .unwrap();
    runner.sample().unwrap().batch
}

/// Every parameter of a weights archive, flattened in name order.
fn flat_weights(bytes: &[u8]) -> Vec<f32> {
    let mut named = Tensor::load_multi_from_stream(std::io::Cursor::new(bytes)).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
        .iter()
        .flat_map(|(_, t)| oxray_rl::to_host(t))
        .collect()
}

#[test]
fn two_learners_on_two_nodes_match_one_learner_and_a_lost_one_fails_the_update() {
    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    // One CPU per node: no node can hold both Learners, so they are packed
    // one per node and their all-reduce crosses nodes.
    let (_head, address, token) = start_head(session, &["--num-cpus", "1"]);
    let (mut node, node_id) = start_node(session, &address, &token, &["--num-cpus", "1"]);
    let (ok, shown) = status(
        session,
        &address,
        &token,
        &["--wait-nodes", "2", "--timeout", "30"],
    );
    assert!(ok, "{shown}");
    let _driver = Driver::join(&address, &token);

    let config = learner_config();
    let batch = fixed_batch(&config);
    let params = UpdateParams {
        lr: 1e-3,
        kl_coeff: 0.2,
        shuffle_seed: 5,
    };

    let mut single = PpoLearner::new(config.clone(), 1);
    let initial = flat_weights(&single.weights().unwrap());
    match single.update(batch.clone(), params) {
        UpdateOutcome::Trained { .. } => {}
        other => panic!("single Learner: {other:?}"),
    }
    let expected = flat_weights(&single.weights().unwrap());

    let mut learners = LearnerGroup::<PpoLearner>::new(config, 2, 1.0, 0.0).unwrap();
    assert_eq!(learners.devices().unwrap(), ["cpu", "cpu"]);
    assert_eq!(flat_weights(&learners.weights().unwrap()), initial);
    learners.update(&batch, params).unwrap();
    let got = flat_weights(&learners.weights().unwrap());

    assert_eq!(got.len(), expected.len());
    let scale = expected.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    let max_diff = got
        .iter()
        .zip(&expected)
        .fold(0.0f32, |m, (g, e)| m.max((g - e).abs()));
    let moved = initial
        .iter()
        .zip(&expected)
        .fold(0.0f32, |m, (i, e)| m.max((i - e).abs()));
    eprintln!("max |Δw| / max |w| = {:e}", max_diff / scale);
    assert!(moved > 1e-3, "the update must move the weights");
    assert!(
        max_diff / scale <= 1e-5,
        "two Learners differ from one by {max_diff} (max |w| {scale})"
    );

    // The node hosting the second Learner dies: the next update reports it.
    kill_node(&mut node, &node_id);
    let error = learners.update(&batch, params).unwrap_err().to_string();
    assert!(
        ["disconnected", "dead"]
            .iter()
            .any(|word| error.contains(word)),
        "{error}"
    );
}

/// `num_gpus_per_learner` > 0 where libtorch finds no CUDA device is
/// refused, in the driver and on a node that offers a GPU it cannot use,
/// instead of training on the CPU unasked; the refused group's GPU is free
/// again. (On a machine with CUDA there is nothing to refuse.)
#[test]
fn gpu_learners_without_a_cuda_device_are_refused_and_release_their_gpu() {
    if tch::Cuda::is_available() {
        return;
    }
    let refused = LearnerGroup::<PpoLearner>::new(learner_config(), 0, 1.0, 1.0)
        .err()
        .expect("a local GPU Learner without CUDA is refused")
        .to_string();
    assert!(refused.contains("num_gpus_per_learner is 1"), "{refused}");
    assert!(refused.contains("num_learners is 0"), "{refused}");

    let session = tempfile::tempdir().unwrap();
    let session = session.path();
    let (_head, address, token) = start_head(session, &["--num-cpus", "1", "--num-gpus", "1"]);
    let _driver = Driver::join(&address, &token);
    let refused = LearnerGroup::<PpoLearner>::new(learner_config(), 1, 1.0, 1.0)
        .err()
        .expect("a Learner placed on a GPU libtorch cannot see is refused")
        .to_string();
    assert!(
        refused.contains("where Learner 0 was placed on a GPU"),
        "{refused}"
    );
    let free_gpus = || {
        let state = oxray_core::daemon::cluster_status(&address, &token).unwrap();
        state.nodes[0].available.get("GPU")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while free_gpus() < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the GPU stays reserved"
        );
        std::thread::yield_now();
    }
}
