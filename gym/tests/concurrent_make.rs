//! Envs made from several threads at once, as the first thing the process
//! does with Python: each make imports its env's module, and concurrent
//! first imports of one package used to hand some threads a half-imported
//! module ("cannot import name ... partially initialized module", then a
//! `KeyError` for the package). A binary of its own, so nothing has
//! imported the classic-control modules before the threads start.
//!
//! Needs the venv that `scripts/env.sh` sets up (gymnasium).

use oxray_envs::{AutoresetMode, Backend, EnvConfig};
use oxray_gym::GymVectorEnv;

#[test]
fn envs_made_from_many_threads_at_once_all_start() {
    let ids = ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0"];
    let barrier = std::sync::Barrier::new(2 * ids.len());
    let made: Vec<(&str, Result<(), String>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = ids
            .iter()
            .chain(ids.iter())
            .map(|id| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let config = EnvConfig {
                        backend: Backend::Gymnasium,
                        ..EnvConfig::new(*id)
                    };
                    barrier.wait();
                    let made = GymVectorEnv::new(&config, 2, AutoresetMode::SameStep)
                        .map(drop)
                        .map_err(|e| e.to_string());
                    (*id, made)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("no panic"))
            .collect()
    });
    let failed: Vec<_> = made.iter().filter(|(_, made)| made.is_err()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
