//! The EnvRunners of one algorithm: a single in-process runner when
//! `num_env_runners` is 0, otherwise that many oxray-core actors.
//!
//! Weights go out through the object store with a version number. How the
//! runners sample is a [`Sampling`] mode:
//! - `Synchronous` (PPO's default, as in RLlib): every `sample()` is requested
//!   after the latest weights were sent, so every action comes from the
//!   weights the Learner is about to update.
//! - `Ahead`: the next `sample()` is requested as soon as the current one is
//!   collected, so sampling overlaps the Learner's update; those actions come
//!   from weights one version old (each rollout records the version it
//!   used). Off-policy algorithms do not mind; PPO's ratio then measures the
//!   change from the sampling weights, so its clipping bounds two updates
//!   instead of one.
//! - `Asynchronous` (APPO and IMPALA, RLlib's
//!   `max_requests_in_flight_per_env_runner`): each runner always has that
//!   many `sample()` calls queued, so it never waits for the Learner; a call
//!   returns whatever rollouts are ready (at least one), and weights sent in
//!   between reach each runner after the samples already queued there.
//!
//! Remote runners are spread over the cluster's nodes and restarted by the
//! core when their process or node dies (RLlib's `restart_failed_env_runners`).
//! A runner whose `sample()` fails with an error of its own (a Python env that
//! raised, with its traceback) is replaced by a fresh actor, as RLlib restarts
//! it. A sample lost either way is skipped, not fatal: the iteration goes on with the
//! healthy runners' rollouts, the restarted runner gets the latest weights
//! before its next sample, and the losses show in the results under
//! `fault_tolerance/`.

use std::collections::VecDeque;
use std::time::Duration;

use oxray_core::{ActorHandle, ObjectRef, SchedulingStrategy};
use rand_chacha::ChaCha8Rng;

use crate::env_runner::{EnvRunner, EnvRunnerConfig, EvaluationDuration, Rollout};
use crate::metrics::{self, EpisodeStats};
use crate::Error;

pub enum EnvRunnerGroup {
    Local(Box<EnvRunner>),
    Remote {
        runners: Vec<ActorHandle<EnvRunner>>,
        /// What replacements of failed runners are built from.
        spawn: Box<RunnerSpawn>,
        /// Each runner's samples requested and not yet collected, oldest
        /// first (calls to one actor run in order).
        in_flight: Vec<VecDeque<ObjectRef<Rollout>>>,
        /// `set_weights` calls not yet confirmed.
        weight_acks: Vec<ObjectRef<()>>,
        /// The last weights sent (version, weights, env steps), for runners
        /// that come back from a restart.
        latest_weights: Option<(u64, ObjectRef<Vec<f32>>, u64)>,
        sampling: Sampling,
        /// Whether each runner's last sample arrived.
        healthy: Vec<bool>,
        /// Samples each runner has delivered since it (re)started.
        served: Vec<u64>,
        /// Runner restarts seen over the run: a lost sample, or a sample drawn
        /// with stale weights by a runner that restarted between calls.
        restarts: u64,
        /// Consecutive `sample()` calls in which every runner failed.
        barren_rounds: u32,
    },
}

/// When remote runners are asked for their next sample (see the module
/// docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    Synchronous,
    Ahead,
    Asynchronous { max_requests_in_flight: usize },
}

/// How to start remote runner `worker_index` (again).
pub struct RunnerSpawn {
    config: EnvRunnerConfig,
    num_cpus: f64,
}

impl RunnerSpawn {
    fn start(&self, worker_index: u64) -> Result<ActorHandle<EnvRunner>, Error> {
        Ok(EnvRunner::options()
            .num_cpus(self.num_cpus)
            .scheduling_strategy(SchedulingStrategy::Spread)
            .max_restarts(MAX_ENV_RUNNER_RESTARTS)
            .remote(EnvRunnerConfig {
                worker_index,
                ..self.config.clone()
            })?)
    }
}

/// RLlib's `max_num_env_runner_restarts` default.
const MAX_ENV_RUNNER_RESTARTS: u32 = 1000;
/// After this many rounds with no runner delivering, training stops.
const MAX_BARREN_ROUNDS: u32 = 20;

/// Failures a restart can cure: the runner's process or node went away.
fn is_runner_failure(error: &oxray_core::Error) -> bool {
    matches!(
        error,
        oxray_core::Error::ActorDied { .. }
            | oxray_core::Error::WorkerDied { .. }
            | oxray_core::Error::ObjectLost { .. }
    )
}

impl EnvRunnerGroup {
    /// Runner `k` (1-based for actors, 0 for the local one) seeds its sub-envs
    /// after runner `k − 1`'s.
    pub fn new(
        config: &EnvRunnerConfig,
        num_env_runners: usize,
        num_cpus_per_env_runner: f64,
        sampling: Sampling,
    ) -> Result<Self, Error> {
        if num_env_runners == 0 {
            return Ok(EnvRunnerGroup::Local(Box::new(EnvRunner::new(
                config.clone(),
            )?)));
        }
        let spawn = Box::new(RunnerSpawn {
            config: config.clone(),
            num_cpus: num_cpus_per_env_runner,
        });
        let runners = (1..=num_env_runners as u64)
            .map(|worker_index| spawn.start(worker_index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EnvRunnerGroup::Remote {
            spawn,
            healthy: vec![true; runners.len()],
            served: vec![0; runners.len()],
            in_flight: vec![VecDeque::new(); runners.len()],
            runners,
            weight_acks: Vec::new(),
            latest_weights: None,
            sampling,
            restarts: 0,
            barren_rounds: 0,
        })
    }

    /// One `sample()` from every runner; in `Asynchronous` mode, the
    /// samples that are ready (waiting for the first one).
    pub fn sample(&mut self) -> Result<Vec<Rollout>, Error> {
        match self {
            EnvRunnerGroup::Local(runner) => Ok(vec![runner.sample()?]),
            EnvRunnerGroup::Remote {
                runners,
                spawn,
                in_flight,
                weight_acks,
                latest_weights,
                healthy,
                served,
                restarts,
                barren_rounds,
                sampling,
            } => {
                let asynchronous = matches!(sampling, Sampling::Asynchronous { .. });
                check_weight_acks(weight_acks, !asynchronous)?;
                let collect = match *sampling {
                    Sampling::Asynchronous {
                        max_requests_in_flight,
                    } => {
                        top_up(runners, in_flight, max_requests_in_flight);
                        ready_runners(in_flight)?
                    }
                    Sampling::Synchronous | Sampling::Ahead => {
                        top_up(runners, in_flight, 1);
                        (0..runners.len()).collect()
                    }
                };
                let latest_version = latest_weights.as_ref().map_or(0, |(v, ..)| *v);
                let mut rollouts = Vec::with_capacity(collect.len());
                let mut needs_weights = vec![false; runners.len()];
                let mut last_failure = None;
                for index in collect {
                    let pending = in_flight[index]
                        .pop_front()
                        .expect("collected runners have a sample in flight");
                    match pending.get() {
                        Ok(rollout) => {
                            // A runner whose count of samples served started
                            // over restarted between two calls. In the
                            // lockstep modes one whose weights are more than
                            // a version old (with `Ahead` its sample was
                            // requested before the last sync) came back with
                            // its first weights and needs the latest; an
                            // asynchronous runner lags by design, so its
                            // restart alone says so.
                            let restarted = rollout.samples_served != served[index] + 1;
                            let stale = if asynchronous {
                                restarted
                            } else {
                                rollout.weights_version + 1 < latest_version
                            };
                            if stale || restarted {
                                let resend = if stale {
                                    "; sending it the latest weights"
                                } else {
                                    ""
                                };
                                eprintln!("EnvRunner {} restarted{resend}", index + 1);
                                *restarts += 1;
                            }
                            needs_weights[index] = stale;
                            served[index] = rollout.samples_served;
                            healthy[index] = true;
                            rollouts.push(rollout);
                        }
                        Err(error) if is_runner_failure(&error) => {
                            eprintln!("EnvRunner {} failed and is restarting: {error}", index + 1);
                            // Calls queued behind the failed one went down
                            // with the process.
                            in_flight[index].clear();
                            healthy[index] = false;
                            served[index] = 0;
                            needs_weights[index] = true;
                            *restarts += 1;
                        }
                        Err(error @ oxray_core::Error::TaskFailed { .. }) => {
                            eprintln!("EnvRunner {} failed and is replaced: {error}", index + 1);
                            let failed = std::mem::replace(
                                &mut runners[index],
                                spawn.start(index as u64 + 1)?,
                            );
                            // Already dead is as good as killed.
                            let _ = oxray_core::kill(&failed);
                            in_flight[index].clear();
                            healthy[index] = false;
                            needs_weights[index] = true;
                            *restarts += 1;
                            last_failure = Some(error);
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                *barren_rounds = if rollouts.is_empty() {
                    *barren_rounds + 1
                } else {
                    0
                };
                if *barren_rounds >= MAX_BARREN_ROUNDS {
                    let last = last_failure.map_or(String::new(), |e| format!("; last error: {e}"));
                    return Err(Error::Env(format!(
                        "every EnvRunner failed {MAX_BARREN_ROUNDS} times in a row; the last restarts did not help{last}"
                    )));
                }
                // Calls to one actor run in order, so a restarted runner has
                // the latest weights before it samples again.
                if let Some((version, weights, env_steps)) = latest_weights {
                    for (runner, _) in runners
                        .iter()
                        .zip(&needs_weights)
                        .filter(|(_, needs)| **needs)
                    {
                        weight_acks.push(runner.set_weights(*version, &*weights, *env_steps));
                    }
                }
                match *sampling {
                    Sampling::Synchronous => {}
                    Sampling::Ahead => top_up(runners, in_flight, 1),
                    Sampling::Asynchronous {
                        max_requests_in_flight,
                    } => top_up(runners, in_flight, max_requests_in_flight),
                }
                Ok(rollouts)
            }
        }
    }

    /// Sends `weights` (version `version`) and the run's `env_steps_sampled`
    /// to every runner.
    pub fn sync_weights(
        &mut self,
        version: u64,
        weights: Vec<f32>,
        env_steps_sampled: u64,
    ) -> Result<(), Error> {
        match self {
            EnvRunnerGroup::Local(runner) => {
                runner.set_weights(version, weights, env_steps_sampled)
            }
            EnvRunnerGroup::Remote {
                runners,
                weight_acks,
                latest_weights,
                ..
            } => {
                let shared = oxray_core::put(&weights)?;
                weight_acks.extend(
                    runners
                        .iter()
                        .map(|r| r.set_weights(version, &shared, env_steps_sampled)),
                );
                *latest_weights = Some((version, shared, env_steps_sampled));
                Ok(())
            }
        }
    }

    /// Plays `duration` with the latest weights, split evenly over the
    /// runners (each gets its share rounded up), and returns the episodes
    /// that finished. For evaluation groups: the runners' envs start over, so
    /// they must not also serve [`EnvRunnerGroup::sample`].
    pub fn evaluate(&mut self, duration: EvaluationDuration) -> Result<EpisodeStats, Error> {
        match self {
            EnvRunnerGroup::Local(runner) => runner.evaluate(duration),
            EnvRunnerGroup::Remote {
                runners,
                weight_acks,
                ..
            } => {
                oxray_core::get_all(&std::mem::take(weight_acks))?;
                let share = |total: u64| total.div_ceil(runners.len() as u64);
                let each = match duration {
                    EvaluationDuration::Episodes(n) => EvaluationDuration::Episodes(share(n)),
                    EvaluationDuration::Timesteps(n) => EvaluationDuration::Timesteps(share(n)),
                };
                let pending: Vec<_> = runners.iter().map(|r| r.evaluate(each)).collect();
                let mut all = EpisodeStats::default();
                for stats in oxray_core::get_all(&pending)? {
                    all.returns.extend(stats.returns);
                    all.lengths.extend(stats.lengths);
                }
                if let EvaluationDuration::Episodes(n) = duration {
                    all.returns.truncate(n as usize);
                    all.lengths.truncate(n as usize);
                }
                Ok(all)
            }
        }
    }

    /// RLlib's `fault_tolerance/` results: runners whose last sample arrived,
    /// and runner restarts seen over the run.
    pub fn fault_tolerance(&self) -> [(String, f64); 2] {
        let (healthy, restarts) = match self {
            EnvRunnerGroup::Local(_) => (1, 0),
            EnvRunnerGroup::Remote {
                healthy, restarts, ..
            } => (healthy.iter().filter(|ok| **ok).count(), *restarts),
        };
        [
            (metrics::NUM_HEALTHY_ENV_RUNNERS.to_string(), healthy as f64),
            (
                metrics::NUM_REMOTE_ENV_RUNNER_RESTARTS.to_string(),
                restarts as f64,
            ),
        ]
    }

    /// Each runner's action-sampling RNG, for checkpoints.
    pub fn rng_states(&self) -> Result<Vec<ChaCha8Rng>, Error> {
        match self {
            EnvRunnerGroup::Local(runner) => Ok(vec![runner.rng_state()]),
            EnvRunnerGroup::Remote { runners, .. } => {
                let states: Vec<_> = runners.iter().map(|r| r.rng_state()).collect();
                Ok(oxray_core::get_all(&states)?)
            }
        }
    }

    /// Restores what [`EnvRunnerGroup::rng_states`] returned; runners beyond
    /// the saved ones (a resumed run with more of them) keep their own.
    pub fn set_rng_states(&mut self, states: Vec<ChaCha8Rng>) -> Result<(), Error> {
        match self {
            EnvRunnerGroup::Local(runner) => {
                if let Some(state) = states.into_iter().next() {
                    runner.set_rng_state(state);
                }
                Ok(())
            }
            EnvRunnerGroup::Remote { runners, .. } => {
                let acks: Vec<_> = runners
                    .iter()
                    .zip(states)
                    .map(|(r, state)| r.set_rng_state(state))
                    .collect();
                oxray_core::get_all(&acks)?;
                Ok(())
            }
        }
    }
}

/// Queues `sample()` calls until every runner has `depth` in flight.
fn top_up(
    runners: &[ActorHandle<EnvRunner>],
    in_flight: &mut [VecDeque<ObjectRef<Rollout>>],
    depth: usize,
) {
    for (runner, queue) in runners.iter().zip(in_flight) {
        while queue.len() < depth {
            queue.push_back(runner.sample());
        }
    }
}

/// The runners whose oldest sample in flight is ready, waiting until one is.
fn ready_runners(in_flight: &[VecDeque<ObjectRef<Rollout>>]) -> Result<Vec<usize>, Error> {
    let oldest: Vec<ObjectRef<Rollout>> = in_flight
        .iter()
        .filter_map(|q| q.front().cloned())
        .collect();
    oxray_core::wait(&oldest, 1, None)?;
    let (ready, _) = oxray_core::wait(&oldest, oldest.len(), Some(Duration::ZERO))?;
    Ok(in_flight
        .iter()
        .enumerate()
        .filter(|(_, q)| {
            q.front()
                .is_some_and(|front| ready.iter().any(|r| r.id() == front.id()))
        })
        .map(|(index, _)| index)
        .collect())
}

/// Collects the `set_weights` confirmations: all of them when `block`, else
/// those already in (asynchronous runners get them after their queued
/// samples). A runner that died gets the weights again when its loss shows.
fn check_weight_acks(weight_acks: &mut Vec<ObjectRef<()>>, block: bool) -> Result<(), Error> {
    let done = if block || weight_acks.is_empty() {
        std::mem::take(weight_acks)
    } else {
        let (ready, pending) =
            oxray_core::wait(weight_acks, weight_acks.len(), Some(Duration::ZERO))?;
        *weight_acks = pending;
        ready
    };
    for ack in done {
        match ack.get() {
            Err(error) if !is_runner_failure(&error) => return Err(error.into()),
            _ => {}
        }
    }
    Ok(())
}
