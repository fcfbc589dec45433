//! The LearnerGroup (RLlib's `LearnerGroup`): the Learners of one run, in the
//! driver (`num_learners: 0`), as one actor, or as several data-parallel
//! actors in a placement group that average their gradients.
//!
//! It is generic over the algorithm's Learner type: an algorithm implements
//! [`AlgorithmLearner`] (its config, batch and per-update parameter types,
//! and its update) and invokes [`learner_actor!`] once, which makes the type
//! an oxray-core actor with the methods every Learner offers (update, weights,
//! state, device, joining a collective group). Everything else, from placement
//! to rolling back a non-finite update, lives here once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxray_core::{ActorHandle, ObjectRef, PlacementGroup, PlacementStrategy, SchedulingStrategy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::learner::{Learner, LearnerState, Snapshot};
use crate::metrics::{Histograms, Metrics};
use crate::rl_module::RLModule;
use crate::Error;

/// What an update reports: metrics, or why it stopped before applying a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UpdateOutcome {
    Trained(Trained),
    NonFiniteLoss(String),
    /// A step failed (a collective operation, libtorch).
    Failed(String),
}

/// A finished update's results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    pub metrics: Metrics,
    /// Value distributions of the update (PPO's advantages), for
    /// TensorBoard histograms.
    pub histograms: Histograms,
    /// Per-row TD errors, for prioritized replay (empty where the algorithm
    /// has none to report).
    pub td_errors: Vec<f32>,
}

/// The part of a Learner that is the same for every algorithm, object-safe
/// so an algorithm's Learner can hand out its [`Learner`] whatever the module.
pub trait LearnerCore: Send {
    fn join_data_parallel_group(
        &mut self,
        group_name: &str,
        rank: usize,
        world_size: usize,
    ) -> Result<(), Error>;
    fn weights(&self) -> Result<Vec<u8>, Error>;
    fn flat_weights(&self) -> Vec<f32>;
    fn snapshot(&self) -> Snapshot;
    fn restore_snapshot(&mut self, snapshot: &Snapshot);
    fn state(&self) -> Result<LearnerState, Error>;
    fn set_state(&mut self, state: &LearnerState) -> Result<(), Error>;
    fn device(&self) -> tch::Device;
    /// The threads its steps run on (libtorch's, or the host gradient's).
    fn threads(&self) -> usize;
}

impl<M: RLModule> LearnerCore for Learner<M> {
    fn join_data_parallel_group(
        &mut self,
        group_name: &str,
        rank: usize,
        world_size: usize,
    ) -> Result<(), Error> {
        Learner::join_data_parallel_group(self, group_name, rank, world_size)
    }

    fn weights(&self) -> Result<Vec<u8>, Error> {
        Learner::weights(self)
    }

    fn flat_weights(&self) -> Vec<f32> {
        Learner::flat_weights(self)
    }

    fn snapshot(&self) -> Snapshot {
        Learner::snapshot(self)
    }

    fn restore_snapshot(&mut self, snapshot: &Snapshot) {
        Learner::restore_snapshot(self, snapshot)
    }

    fn state(&self) -> Result<LearnerState, Error> {
        Learner::state(self)
    }

    fn set_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        Learner::set_state(self, state)
    }

    fn device(&self) -> tch::Device {
        Learner::device(self)
    }

    fn threads(&self) -> usize {
        Learner::threads(self)
    }
}

/// An algorithm's Learner: what it is built from and how it updates.
pub trait AlgorithmLearner: Sized + Send + 'static {
    type Config: Clone + Serialize + DeserializeOwned + Send + 'static;
    /// What the driver sends to update on (a sample batch, a replay sample).
    type Batch: Clone + Serialize + DeserializeOwned + Send + 'static;
    /// Per-update settings from the driver (learning rate, coefficients).
    type Params: Clone + Serialize + DeserializeOwned + Send + 'static;
    /// Prefix of the collective group names of this algorithm's Learners.
    const ALGORITHM: &'static str;

    /// Whether [`AlgorithmLearner::learn`] is a single optimizer step, which
    /// a non-finite loss skips before anything changes
    /// ([`Learner::apply_loss`]): [`update`] then needs no snapshot to roll
    /// back to and saves copying the parameters and Adam's moments on every
    /// update (DQN updates once per replayed minibatch).
    const SINGLE_STEP: bool = false;

    fn build(config: Self::Config) -> Self;

    /// One update. It may leave the Learner half-updated when it reports a
    /// non-finite loss: [`update`] rolls it back.
    fn learn(&mut self, batch: Self::Batch, params: Self::Params) -> UpdateOutcome;

    fn learner(&self) -> &dyn LearnerCore;

    fn learner_mut(&mut self) -> &mut dyn LearnerCore;

    /// Takes `state` (weights and optimizer); Learners with more state
    /// (a target network) derive it here.
    fn restore_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        self.learner_mut().set_state(state)
    }
}

/// [`AlgorithmLearner::learn`], rolled back to the parameters and optimizer
/// state the update started with (the last good ones, copied in memory) on a
/// non-finite loss; a [`AlgorithmLearner::SINGLE_STEP`] update has nothing
/// to roll back.
pub fn update<A: AlgorithmLearner>(
    learner: &mut A,
    batch: A::Batch,
    params: A::Params,
) -> UpdateOutcome {
    let last_good = (!A::SINGLE_STEP).then(|| learner.learner().snapshot());
    let outcome = learner.learn(batch, params);
    if let (UpdateOutcome::NonFiniteLoss(_), Some(last_good)) = (&outcome, &last_good) {
        learner.learner_mut().restore_snapshot(last_good);
    }
    outcome
}

/// `cuda:N`, or `cpu` with the Learner's threads when there are more than
/// one (`cpu (2 threads)`), for logs and the GPU check.
pub fn device_name(learner: &dyn LearnerCore) -> String {
    match learner.device() {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        tch::Device::Cpu => match learner.threads() {
            threads if threads > 1 => format!("cpu ({threads} threads)"),
            _ => "cpu".to_string(),
        },
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The remote side of an [`AlgorithmLearner`]; [`learner_actor!`] implements
/// it by forwarding to the actor's generated client.
pub trait LearnerActor: AlgorithmLearner + oxray_core::ActorClass {
    fn spawn(
        config: Self::Config,
        num_cpus: f64,
        num_gpus: f64,
        placement: Option<SchedulingStrategy>,
    ) -> oxray_core::Result<ActorHandle<Self>>;
    fn remote_update(
        actor: &ActorHandle<Self>,
        batch: &Self::Batch,
        params: Self::Params,
    ) -> ObjectRef<UpdateOutcome>;
    fn remote_join(
        actor: &ActorHandle<Self>,
        group_name: String,
        rank: usize,
        world_size: usize,
    ) -> ObjectRef<()>;
    fn remote_weights(actor: &ActorHandle<Self>) -> ObjectRef<Vec<u8>>;
    fn remote_flat_weights(actor: &ActorHandle<Self>) -> ObjectRef<Vec<f32>>;
    fn remote_state(actor: &ActorHandle<Self>) -> ObjectRef<LearnerState>;
    fn remote_set_state(actor: &ActorHandle<Self>, state: LearnerState) -> ObjectRef<()>;
    fn remote_device(actor: &ActorHandle<Self>) -> ObjectRef<String>;
}

/// Makes an [`AlgorithmLearner`] an oxray-core actor and implements
/// [`LearnerActor`] for it. The invoking crate needs `oxray_core` and
/// `oxray_rl` as dependencies under those names.
#[macro_export]
macro_rules! learner_actor {
    ($learner:ident) => {
        #[::oxray_core::actor]
        impl $learner {
            pub fn new(
                config: <$learner as ::oxray_rl::learner_group::AlgorithmLearner>::Config,
                torch_threads: usize,
            ) -> Self {
                ::oxray_rl::use_torch_threads(torch_threads);
                <$learner as ::oxray_rl::learner_group::AlgorithmLearner>::build(config)
            }

            pub fn update(
                &mut self,
                batch: <$learner as ::oxray_rl::learner_group::AlgorithmLearner>::Batch,
                params: <$learner as ::oxray_rl::learner_group::AlgorithmLearner>::Params,
            ) -> ::oxray_rl::learner_group::UpdateOutcome {
                ::oxray_rl::learner_group::update(self, batch, params)
            }

            pub fn join_data_parallel_group(
                &mut self,
                group_name: String,
                rank: usize,
                world_size: usize,
            ) -> ::std::result::Result<(), String> {
                ::oxray_rl::learner_group::AlgorithmLearner::learner_mut(self)
                    .join_data_parallel_group(&group_name, rank, world_size)
                    .map_err(|e| e.to_string())
            }

            pub fn flat_weights(&self) -> Vec<f32> {
                ::oxray_rl::learner_group::AlgorithmLearner::learner(self).flat_weights()
            }

            pub fn weights(&self) -> ::std::result::Result<Vec<u8>, String> {
                ::oxray_rl::learner_group::AlgorithmLearner::learner(self)
                    .weights()
                    .map_err(|e| e.to_string())
            }

            pub fn state(
                &self,
            ) -> ::std::result::Result<::oxray_rl::learner::LearnerState, String> {
                ::oxray_rl::learner_group::AlgorithmLearner::learner(self)
                    .state()
                    .map_err(|e| e.to_string())
            }

            pub fn set_state(
                &mut self,
                state: ::oxray_rl::learner::LearnerState,
            ) -> ::std::result::Result<(), String> {
                ::oxray_rl::learner_group::AlgorithmLearner::restore_state(self, &state)
                    .map_err(|e| e.to_string())
            }

            pub fn device(&self) -> String {
                ::oxray_rl::learner_group::device_name(
                    ::oxray_rl::learner_group::AlgorithmLearner::learner(self),
                )
            }
        }

        impl ::oxray_rl::learner_group::LearnerActor for $learner {
            fn spawn(
                config: Self::Config,
                num_cpus: f64,
                num_gpus: f64,
                placement: Option<::oxray_core::SchedulingStrategy>,
            ) -> ::oxray_core::Result<::oxray_core::ActorHandle<Self>> {
                let mut options = Self::options().num_cpus(num_cpus).num_gpus(num_gpus);
                if let Some(strategy) = placement {
                    options = options.scheduling_strategy(strategy);
                }
                options.remote(config, ::oxray_rl::torch_threads_for(num_cpus))
            }

            fn remote_update(
                actor: &::oxray_core::ActorHandle<Self>,
                batch: &Self::Batch,
                params: Self::Params,
            ) -> ::oxray_core::ObjectRef<::oxray_rl::learner_group::UpdateOutcome> {
                actor.update(batch.clone(), params)
            }

            fn remote_join(
                actor: &::oxray_core::ActorHandle<Self>,
                group_name: String,
                rank: usize,
                world_size: usize,
            ) -> ::oxray_core::ObjectRef<()> {
                actor.join_data_parallel_group(group_name, rank, world_size)
            }

            fn remote_weights(
                actor: &::oxray_core::ActorHandle<Self>,
            ) -> ::oxray_core::ObjectRef<Vec<u8>> {
                actor.weights()
            }

            fn remote_flat_weights(
                actor: &::oxray_core::ActorHandle<Self>,
            ) -> ::oxray_core::ObjectRef<Vec<f32>> {
                actor.flat_weights()
            }

            fn remote_state(
                actor: &::oxray_core::ActorHandle<Self>,
            ) -> ::oxray_core::ObjectRef<::oxray_rl::learner::LearnerState> {
                actor.state()
            }

            fn remote_set_state(
                actor: &::oxray_core::ActorHandle<Self>,
                state: ::oxray_rl::learner::LearnerState,
            ) -> ::oxray_core::ObjectRef<()> {
                actor.set_state(state)
            }

            fn remote_device(
                actor: &::oxray_core::ActorHandle<Self>,
            ) -> ::oxray_core::ObjectRef<String> {
                actor.device()
            }
        }
    };
}

/// A Learner in the driver or as an actor.
enum LearnerRef<A: LearnerActor> {
    Local(Box<A>),
    Remote(ActorHandle<A>),
}

/// An update a [`LearnerRef`] has started.
enum PendingUpdate {
    Done(UpdateOutcome),
    Remote(ObjectRef<UpdateOutcome>),
}

/// How long Learner actors may wait for their placement group.
const LEARNER_PLACEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The Learners of a run.
pub struct LearnerGroup<A: LearnerActor> {
    /// Dropped first: the actors end before their bundles are freed.
    learners: Vec<LearnerRef<A>>,
    /// Kept so the bundles stay reserved while the Learners live.
    _placement: Option<Reservation>,
}

/// A placement group that lives as long as this value: a group outlives
/// its creator's handles otherwise (as in Ray, until removed or its job
/// ends), and the next run of the same driver (a search's next trial)
/// would wait for bundles nobody uses.
struct Reservation(PlacementGroup);

impl Drop for Reservation {
    fn drop(&mut self) {
        // Fails only once the cluster is gone, which frees it too.
        let _ = oxray_core::remove_placement_group(&self.0);
    }
}

impl<A: LearnerActor> LearnerGroup<A> {
    /// `num_learners: 0` builds one Learner in this process; N ≥ 1 starts N
    /// actors, which join one collective group when N > 1. Each Learner runs
    /// [`torch_threads_for`](crate::torch_threads_for)`(num_cpus)` libtorch
    /// threads; actors also reserve `num_cpus` CPUs and `num_gpus` GPUs.
    pub fn new(
        config: A::Config,
        num_learners: usize,
        num_cpus: f64,
        num_gpus: f64,
    ) -> Result<Self, Error> {
        if num_learners == 0 {
            if num_gpus > 0.0 && !tch::Cuda::is_available() {
                return Err(Error::NoGpu {
                    num_gpus,
                    place: "on this machine (the Learner runs in the driver: num_learners is 0)"
                        .into(),
                });
            }
            crate::use_torch_threads(crate::torch_threads_for(num_cpus));
            return Ok(LearnerGroup {
                learners: vec![LearnerRef::Local(Box::new(A::build(config)))],
                _placement: None,
            });
        }
        // A group that reserves nothing (`num_cpus_per_learner: 0` on CPU
        // Learners) has nothing to place: its actors go where they fit.
        let reserves = num_cpus > 0.0 || num_gpus > 0.0;
        let placement = if reserves && (num_learners > 1 || num_gpus > 0.0) {
            let group = Reservation(learner_placement_group(num_learners, num_cpus, num_gpus)?);
            group.0.wait(LEARNER_PLACEMENT_TIMEOUT)?;
            Some(group)
        } else {
            None
        };
        let actors = (0..num_learners)
            .map(|index| {
                let bundle = placement.as_ref().map(|group| group.0.bundle(index));
                A::spawn(config.clone(), num_cpus, num_gpus, bundle)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if num_gpus > 0.0 {
            // A node may offer GPUs (`oxray start --num-gpus`) that its
            // libtorch cannot use; its Learner would quietly train on the CPU.
            let devices: Vec<_> = actors.iter().map(A::remote_device).collect();
            let devices = oxray_core::get_all(&devices)?;
            if let Some(rank) = devices.iter().position(|device| device.starts_with("cpu")) {
                return Err(Error::NoGpu {
                    num_gpus,
                    place: format!("where Learner {rank} was placed on a GPU"),
                });
            }
        }
        if num_learners > 1 {
            let group_name = data_parallel_group_name(A::ALGORITHM);
            let joins: Vec<_> = actors
                .iter()
                .enumerate()
                .map(|(rank, actor)| A::remote_join(actor, group_name.clone(), rank, num_learners))
                .collect();
            oxray_core::get_all(&joins)?;
        }
        Ok(LearnerGroup {
            learners: actors.into_iter().map(LearnerRef::Remote).collect(),
            _placement: placement,
        })
    }

    /// One update on `batch` by every Learner, started on all of them before
    /// waiting for any (data-parallel Learners meet in each step's
    /// all-reduce); their metrics averaged, the first Learner's TD errors and
    /// histograms (every Learner sees the whole batch).
    /// The first error any of them reports (a non-finite loss, a failed
    /// all-reduce, a dead actor) fails the update.
    pub fn update(&mut self, batch: &A::Batch, params: A::Params) -> Result<Trained, Error> {
        let pending: Vec<PendingUpdate> = self
            .learners
            .iter_mut()
            .map(|learner| match learner {
                LearnerRef::Local(learner) => {
                    PendingUpdate::Done(update(&mut **learner, batch.clone(), params.clone()))
                }
                LearnerRef::Remote(actor) => {
                    PendingUpdate::Remote(A::remote_update(actor, batch, params.clone()))
                }
            })
            .collect();
        let n = pending.len() as f64;
        let mut total = Trained::default();
        for (index, pending) in pending.into_iter().enumerate() {
            let outcome = match pending {
                PendingUpdate::Done(outcome) => outcome,
                PendingUpdate::Remote(outcome) => outcome.get()?,
            };
            match outcome {
                UpdateOutcome::Trained(trained) => {
                    for (key, value) in trained.metrics {
                        *total.metrics.entry(key).or_default() += value / n;
                    }
                    if index == 0 {
                        total.td_errors = trained.td_errors;
                        total.histograms = trained.histograms;
                    }
                }
                UpdateOutcome::NonFiniteLoss(reason) => return Err(Error::NonFiniteLoss(reason)),
                UpdateOutcome::Failed(reason) => return Err(Error::Learner(reason)),
            }
        }
        Ok(total)
    }

    /// The trainable parameters every Learner holds (they step in sync), as
    /// one flat vector: what EnvRunners are synced with.
    pub fn flat_weights(&self) -> Result<Vec<f32>, Error> {
        match &self.learners[0] {
            LearnerRef::Local(learner) => Ok(learner.learner().flat_weights()),
            LearnerRef::Remote(actor) => Ok(A::remote_flat_weights(actor).get()?),
        }
    }

    /// The weights every Learner holds, as a libtorch archive (checkpoints,
    /// histograms).
    pub fn weights(&self) -> Result<Vec<u8>, Error> {
        match &self.learners[0] {
            LearnerRef::Local(learner) => learner.learner().weights(),
            LearnerRef::Remote(actor) => Ok(A::remote_weights(actor).get()?),
        }
    }

    pub fn state(&self) -> Result<LearnerState, Error> {
        match &self.learners[0] {
            LearnerRef::Local(learner) => learner.learner().state(),
            LearnerRef::Remote(actor) => Ok(A::remote_state(actor).get()?),
        }
    }

    /// Gives every Learner `state`, so data-parallel replicas resume in sync.
    pub fn set_state(&mut self, state: &LearnerState) -> Result<(), Error> {
        for learner in &mut self.learners {
            match learner {
                LearnerRef::Local(learner) => learner.restore_state(state)?,
                LearnerRef::Remote(actor) => A::remote_set_state(actor, state.clone()).get()?,
            }
        }
        Ok(())
    }

    /// Where each Learner's module lives (`cpu`, `cuda:0`).
    pub fn devices(&self) -> Result<Vec<String>, Error> {
        self.learners
            .iter()
            .map(|learner| match learner {
                LearnerRef::Local(learner) => Ok(device_name(learner.learner())),
                LearnerRef::Remote(actor) => Ok(A::remote_device(actor).get()?),
            })
            .collect()
    }
}

/// Collective groups are named in the cluster's key-value store, which
/// several drivers may share: the process id, the time and a counter make the
/// name unique to this set of Learners.
fn data_parallel_group_name(algorithm: &str) -> String {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos());
    format!(
        "{}-learners-{}-{nanos}-{}",
        algorithm.to_lowercase(),
        std::process::id(),
        CREATED.fetch_add(1, Ordering::Relaxed)
    )
}

/// Reserves one bundle per Learner actor (`{CPU: num_cpus, GPU: num_gpus}`)
/// so data-parallel Learners start together: on one node when one can hold
/// them all (STRICT_PACK keeps the all-reduce inside a node), else on as few
/// nodes as possible (PACK). Learner `i` goes into `bundle(i)`.
pub fn learner_placement_group(
    num_learners: usize,
    num_cpus: f64,
    num_gpus: f64,
) -> Result<PlacementGroup, Error> {
    let bundle = [("CPU", num_cpus), ("GPU", num_gpus)];
    let bundle: Vec<(&str, f64)> = bundle.into_iter().filter(|(_, n)| *n > 0.0).collect();
    let bundles = vec![bundle.as_slice(); num_learners];
    // Infeasibility is judged against the idle cluster, so it means that no
    // node can ever hold the whole group.
    match oxray_core::placement_group(&bundles, PlacementStrategy::StrictPack) {
        Err(oxray_core::Error::Infeasible { .. }) => Ok(oxray_core::placement_group(
            &bundles,
            PlacementStrategy::Pack,
        )?),
        placed => Ok(placed?),
    }
}
