//! Proximal Policy Optimization (Schulman et al. 2017), readable top to bottom:
//!
//! 1. the `training:` config section and its checks,
//! 2. the loss — ratio r_t(θ), clipped surrogate L^CLIP, value loss L^VF,
//!    entropy bonus S, optional KL penalty,
//! 3. the PPO Learner: GAE(γ, λ) over the batch, then `num_epochs` passes of
//!    shuffled minibatches; with several Learners each takes its slice of
//!    every minibatch and the gradients are averaged between them,
//! 4. the algorithm: sample with the EnvRunners, update through the
//!    LearnerGroup, broadcast the new weights, report RLlib's metrics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxray_core::{ActorHandle, ObjectRef, PlacementGroup};
use oxray_rl::checkpoint::{self, Checkpoint};
use oxray_rl::distributions::ActionDistribution;
use oxray_rl::env_runner::{policy_spec, EnvRunnerConfig};
use oxray_rl::env_runner_group::EnvRunnerGroup;
use oxray_rl::gae::compute_gae;
use oxray_rl::learner::{
    learner_placement_group, Learner, LearnerConfig, LearnerGroup, LearnerState, Step,
};
use oxray_rl::metrics::{self, EpisodeWindow, Histograms, Metrics};
use oxray_rl::models::add_weight_histograms;
use oxray_rl::{to_host, SampleBatch};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::algorithm::{Algorithm, TrainError};
use crate::config::{ExperimentConfig, LearnersConfig};

// ---------------------------------------------------------------------------
// 1. Config
// ---------------------------------------------------------------------------

/// The `training:` section, with RLlib's names and defaults (except where a
/// comment says otherwise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoTraining {
    pub lr: f64,
    /// Piecewise-linear `[[env_steps, lr], ...]`; overrides `lr` when set.
    pub lr_schedule: Option<Vec<(u64, f64)>>,
    pub gamma: f64,
    /// GAE λ (`lambda_` in RLlib's Python API, where `lambda` is reserved).
    #[serde(rename = "lambda", alias = "lambda_")]
    pub lambda: f64,
    /// ε of the clipped surrogate.
    pub clip_param: f64,
    /// Clip the squared value error at this value (RLlib's semantics).
    pub vf_clip_param: Option<f64>,
    pub vf_loss_coeff: f64,
    pub entropy_coeff: f64,
    pub use_kl_loss: bool,
    /// Initial KL coefficient; adapted towards `kl_target` every iteration.
    pub kl_coeff: f64,
    pub kl_target: f64,
    /// Normalise advantages per minibatch (CleanRL does; RLlib per batch).
    pub normalize_advantages: bool,
    pub num_epochs: usize,
    pub minibatch_size: usize,
    pub train_batch_size: usize,
    /// Global-norm gradient clipping; none when absent.
    pub grad_clip: Option<f64>,
}

impl Default for PpoTraining {
    fn default() -> Self {
        PpoTraining {
            lr: 5e-5,
            lr_schedule: None,
            gamma: 0.99,
            lambda: 1.0,
            clip_param: 0.3,
            vf_clip_param: Some(10.0),
            vf_loss_coeff: 1.0,
            entropy_coeff: 0.0,
            use_kl_loss: true,
            kl_coeff: 0.2,
            kl_target: 0.01,
            normalize_advantages: true,
            num_epochs: 30,
            minibatch_size: 128,
            train_batch_size: 4000,
            grad_clip: None,
        }
    }
}

impl PpoTraining {
    /// The first out-of-range value, as (dotted key, what is wrong).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let checks: [(bool, &str, &str); 11] = [
            (
                self.lr > 0.0 && self.lr.is_finite(),
                "lr",
                "must be positive",
            ),
            (
                (0.0..=1.0).contains(&self.gamma),
                "gamma",
                "must be within [0, 1]",
            ),
            (
                (0.0..=1.0).contains(&self.lambda),
                "lambda",
                "must be within [0, 1]",
            ),
            (self.clip_param > 0.0, "clip_param", "must be positive"),
            (
                self.vf_clip_param.is_none_or(|c| c > 0.0),
                "vf_clip_param",
                "must be positive",
            ),
            (
                self.vf_loss_coeff >= 0.0,
                "vf_loss_coeff",
                "must not be negative",
            ),
            (
                self.kl_coeff >= 0.0 && self.kl_target > 0.0,
                "kl_coeff",
                "kl_coeff ≥ 0 and kl_target > 0",
            ),
            (self.num_epochs >= 1, "num_epochs", "must be at least 1"),
            (
                self.minibatch_size >= 1,
                "minibatch_size",
                "must be at least 1",
            ),
            (
                self.train_batch_size >= 1,
                "train_batch_size",
                "must be at least 1",
            ),
            (
                self.grad_clip.is_none_or(|c| c > 0.0),
                "grad_clip",
                "must be positive",
            ),
        ];
        for (ok, key, message) in checks {
            if !ok {
                return Err((format!("training.{key}"), message.into()));
            }
        }
        match &self.lr_schedule {
            Some(points)
                if points.is_empty()
                    || points.windows(2).any(|w| w[1].0 < w[0].0)
                    || points.iter().any(|p| p.1 < 0.0) =>
            {
                Err((
                    "training.lr_schedule".into(),
                    "needs [env_steps, lr] points with ascending steps and lr ≥ 0".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The learning rate after `env_steps` sampled steps.
    pub fn lr_at(&self, env_steps: u64) -> f64 {
        let Some(points) = &self.lr_schedule else {
            return self.lr;
        };
        let after = points.partition_point(|p| p.0 <= env_steps);
        match (after.checked_sub(1).map(|i| points[i]), points.get(after)) {
            (Some((s0, lr0)), Some(&(s1, lr1))) => {
                lr0 + (lr1 - lr0) * (env_steps - s0) as f64 / (s1 - s0) as f64
            }
            (Some((_, lr)), None) | (None, Some(&(_, lr))) => lr,
            (None, None) => self.lr,
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Loss
// ---------------------------------------------------------------------------

/// One minibatch, already on the Learner's device.
pub struct Minibatch {
    pub obs: Tensor,
    pub actions: Tensor,
    /// log π_θold(a_t|s_t), as recorded while sampling.
    pub old_logp: Tensor,
    /// π_θold(·|s_t) before this update, for the KL term.
    pub old_dist: ActionDistribution,
    /// Already normalised when the config asks for it (see
    /// [`normalize_advantages`]).
    pub advantages: Tensor,
    pub value_targets: Tensor,
}

/// The loss and its terms (scalars).
pub struct PpoLoss {
    pub total: Tensor,
    pub policy_loss: Tensor,
    pub vf_loss: Tensor,
    pub entropy: Tensor,
    pub mean_kl: Tensor,
}

/// L = −L^CLIP + c_vf·L^VF − c_ent·S + β·KL, from the current policy's
/// distribution `dist` and values `values` on minibatch `mb`.
pub fn ppo_loss(
    dist: &ActionDistribution,
    values: &Tensor,
    mb: &Minibatch,
    config: &PpoTraining,
    kl_coeff: f64,
) -> PpoLoss {
    let advantages = &mb.advantages;
    // r_t(θ) = π_θ(a_t|s_t) / π_θold(a_t|s_t)
    let ratio = (dist.log_prob(&mb.actions) - &mb.old_logp).exp();
    // L^CLIP = E_t[min(r_t Â_t, clip(r_t, 1−ε, 1+ε) Â_t)]
    let eps = config.clip_param;
    let surrogate =
        (&ratio * advantages).minimum(&(ratio.clamp(1.0 - eps, 1.0 + eps) * advantages));
    let policy_loss = -surrogate.mean(Kind::Float);
    // L^VF = E_t[(V_θ(s_t) − V_t^targ)²], each term clipped at vf_clip_param
    let squared_error = (values - &mb.value_targets).square();
    let vf_loss = match config.vf_clip_param {
        Some(clip) => squared_error.clamp_max(clip),
        None => squared_error,
    }
    .mean(Kind::Float);
    // S = E_t[H(π_θ(·|s_t))]
    let entropy = dist.entropy().mean(Kind::Float);
    let mean_kl = mb.old_dist.kl(dist).mean(Kind::Float);
    let mut total =
        &policy_loss + &vf_loss * config.vf_loss_coeff - &entropy * config.entropy_coeff;
    if config.use_kl_loss {
        total += &mean_kl * kl_coeff;
    }
    PpoLoss {
        total,
        policy_loss,
        vf_loss,
        entropy,
        mean_kl,
    }
}

/// A minibatch's advantages scaled to zero mean and unit variance, with the
/// statistics of the whole minibatch even when several Learners split it.
pub fn normalize_advantages(advantages: &Tensor) -> Tensor {
    if advantages.size()[0] > 1 {
        (advantages - advantages.mean(Kind::Float)) / (advantages.std(true) + 1e-8)
    } else {
        advantages.shallow_clone()
    }
}

// ---------------------------------------------------------------------------
// 3. Learner
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PpoLearnerConfig {
    pub learner: LearnerConfig,
    pub training: PpoTraining,
}

/// What the driver sends with each batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateParams {
    pub lr: f64,
    pub kl_coeff: f64,
    /// Seeds this update's minibatch shuffling, so no RNG state needs saving.
    pub shuffle_seed: u64,
}

/// A [`Learner`] that knows PPO's update.
pub struct PpoLearner {
    learner: Learner,
    training: PpoTraining,
}

/// What an update reports: metrics and the batch's GAE advantages (for
/// histograms), or why it stopped before applying a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UpdateOutcome {
    Trained {
        metrics: Metrics,
        advantages: Vec<f32>,
    },
    NonFiniteLoss(String),
    /// The weights could not be snapshotted or restored around the update.
    Failed(String),
}

#[oxray_core::actor]
impl PpoLearner {
    pub fn new(config: PpoLearnerConfig) -> Self {
        PpoLearner {
            learner: Learner::new(&config.learner),
            training: config.training,
        }
    }

    /// GAE over `batch`, then `num_epochs` epochs of minibatch steps. On a
    /// non-finite loss the Learner goes back to the weights and optimizer
    /// state it started the update with: the last good ones.
    pub fn update(&mut self, batch: SampleBatch, params: UpdateParams) -> UpdateOutcome {
        let last_good = match self.learner.state() {
            Ok(state) => state,
            Err(e) => return UpdateOutcome::Failed(format!("cannot snapshot weights: {e}")),
        };
        let outcome = self.update_from(batch, params);
        if let UpdateOutcome::NonFiniteLoss(_) = outcome {
            if let Err(e) = self.learner.set_state(&last_good) {
                return UpdateOutcome::Failed(format!("cannot restore weights: {e}"));
            }
        }
        outcome
    }

    fn update_from(&mut self, batch: SampleBatch, params: UpdateParams) -> UpdateOutcome {
        let cfg = &self.training;
        self.learner.set_lr(params.lr);
        let l = &self.learner;
        let obs = l.tensor(&batch.obs, batch.obs_dim);
        let actions = l.tensor(&batch.actions, batch.action_dim);
        let old_logp = l.tensor(&batch.action_logp, 1).view(-1);

        // One forward without gradients: V(s) for GAE (plus the bootstrap and
        // truncation observations) and π_θold for the KL term.
        let (old_dist, values, bootstrap_values, truncation_values) = tch::no_grad(|| {
            let (dist, values) = l.model().forward(&obs);
            let value_of = |o: &[f32]| to_host(&l.model().value(&l.tensor(o, batch.obs_dim)));
            (
                dist,
                to_host(&values),
                value_of(&batch.bootstrap_obs),
                value_of(&batch.truncation_obs),
            )
        });
        // A truncated episode continues in principle: its last reward gets the
        // discounted value of the state it was cut off in.
        let mut rewards = batch.rewards.clone();
        for (&i, v) in batch.truncation_index.iter().zip(&truncation_values) {
            rewards[i as usize] += cfg.gamma as f32 * v;
        }
        let ends: Vec<bool> = batch
            .terminateds
            .iter()
            .zip(&batch.truncateds)
            .map(|(t, u)| t | u)
            .collect();
        let gae = compute_gae(
            &rewards,
            &values,
            &ends,
            &bootstrap_values,
            batch.fragment_len,
            cfg.gamma as f32,
            cfg.lambda as f32,
        );
        let advantages = l.tensor(&gae.advantages, 1).view(-1);
        let value_targets = l.tensor(&gae.value_targets, 1).view(-1);

        let device = l.device();
        let mut rng = ChaCha8Rng::seed_from_u64(params.shuffle_seed);
        let mut order: Vec<i64> = (0..batch.len() as i64).collect();
        let mut sums = [0.0f64; 5];
        let mut steps = 0;
        for _ in 0..cfg.num_epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(cfg.minibatch_size) {
                let index = Tensor::from_slice(chunk).to_device(device);
                let mut mb_advantages = advantages.index_select(0, &index);
                if cfg.normalize_advantages {
                    mb_advantages = normalize_advantages(&mb_advantages);
                }
                let rows = self.learner.slice_of(chunk.len());
                let (step, terms) = if rows.is_empty() {
                    (self.learner.apply_no_loss(), [0.0; 3])
                } else {
                    let (start, len) = (rows.start as i64, rows.len() as i64);
                    let index = index.narrow(0, start, len);
                    let mb = Minibatch {
                        obs: obs.index_select(0, &index),
                        actions: actions.index_select(0, &index),
                        old_logp: old_logp.index_select(0, &index),
                        old_dist: old_dist.select(&index),
                        advantages: mb_advantages.narrow(0, start, len),
                        value_targets: value_targets.index_select(0, &index),
                    };
                    let (dist, values) = self.learner.model().forward(&mb.obs);
                    let loss = ppo_loss(&dist, &values, &mb, cfg, params.kl_coeff);
                    // Averaged over the Learners, weighted slice means are the
                    // whole minibatch's means.
                    let weight = self.learner.slice_weight(rows.len(), chunk.len());
                    let terms = [&loss.policy_loss, &loss.vf_loss, &loss.entropy]
                        .map(|term| term.double_value(&[]) * weight);
                    (self.learner.apply_loss(&(loss.total * weight)), terms)
                };
                let (total, grad_norm) = match step {
                    Ok(Step::Applied { loss, grad_norm }) => (loss, grad_norm),
                    Ok(Step::NonFiniteLoss(total)) => {
                        return UpdateOutcome::NonFiniteLoss(format!(
                            "loss is {total} at minibatch step {steps}"
                        ))
                    }
                    Err(e) => {
                        return UpdateOutcome::Failed(format!("minibatch step {steps} failed: {e}"))
                    }
                };
                for (sum, term) in sums
                    .iter_mut()
                    .zip([total, terms[0], terms[1], terms[2], grad_norm])
                {
                    *sum += term;
                }
                steps += 1;
            }
        }
        let mean_kl = tch::no_grad(|| {
            let new_dist = self.learner.model().distribution(&obs);
            old_dist.kl(&new_dist).mean(Kind::Float).double_value(&[])
        });
        let explained_var = explained_variance(&values, &gae.value_targets);
        let n = f64::from(steps);
        let prefix = "learners/default_policy";
        let metrics = Metrics::from([
            (format!("{prefix}/total_loss"), sums[0] / n),
            (format!("{prefix}/policy_loss"), sums[1] / n),
            (format!("{prefix}/vf_loss"), sums[2] / n),
            (format!("{prefix}/entropy"), sums[3] / n),
            (
                format!("{prefix}/gradients_default_optimizer_global_norm"),
                sums[4] / n,
            ),
            (format!("{prefix}/mean_kl_loss"), mean_kl),
            (format!("{prefix}/vf_explained_var"), explained_var),
            (format!("{prefix}/curr_kl_coeff"), params.kl_coeff),
            (
                format!("{prefix}/default_optimizer_learning_rate"),
                params.lr,
            ),
        ]);
        UpdateOutcome::Trained {
            metrics,
            advantages: gae.advantages,
        }
    }

    /// Joins the data-parallel group of a run with several Learners.
    pub fn join_data_parallel_group(
        &mut self,
        group_name: String,
        rank: usize,
        world_size: usize,
    ) -> Result<(), String> {
        self.learner
            .join_data_parallel_group(&group_name, rank, world_size)
            .map_err(|e| e.to_string())
    }

    pub fn weights(&self) -> Result<Vec<u8>, String> {
        self.learner.weights().map_err(|e| e.to_string())
    }

    pub fn state(&self) -> Result<LearnerState, String> {
        self.learner.state().map_err(|e| e.to_string())
    }

    pub fn set_state(&mut self, state: LearnerState) -> Result<(), String> {
        self.learner.set_state(&state).map_err(|e| e.to_string())
    }

    /// Where the model lives (`cpu`, `cuda:0`), for logs and the GPU check.
    pub fn device(&self) -> String {
        match self.learner.device() {
            tch::Device::Cuda(i) => format!("cuda:{i}"),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// A PPO Learner in the driver (`num_learners: 0`) or as an actor.
enum LearnerRef {
    Local(Box<PpoLearner>),
    Remote(ActorHandle<PpoLearner>),
}

/// An update a [`LearnerRef`] has started.
enum PendingUpdate {
    Done(UpdateOutcome),
    Remote(ObjectRef<UpdateOutcome>),
}

impl LearnerRef {
    fn start_update(&mut self, batch: &SampleBatch, params: UpdateParams) -> PendingUpdate {
        match self {
            LearnerRef::Local(learner) => {
                PendingUpdate::Done(learner.update(batch.clone(), params))
            }
            LearnerRef::Remote(actor) => PendingUpdate::Remote(actor.update(batch.clone(), params)),
        }
    }

    fn weights(&self) -> Result<Vec<u8>, TrainError> {
        match self {
            LearnerRef::Local(learner) => learner.weights().map_err(TrainError::Learner),
            LearnerRef::Remote(actor) => Ok(actor.weights().get()?),
        }
    }

    fn state(&self) -> Result<LearnerState, TrainError> {
        match self {
            LearnerRef::Local(learner) => learner.state().map_err(TrainError::Learner),
            LearnerRef::Remote(actor) => Ok(actor.state().get()?),
        }
    }

    fn set_state(&mut self, state: LearnerState) -> Result<(), TrainError> {
        match self {
            LearnerRef::Local(learner) => learner.set_state(state).map_err(TrainError::Restore),
            LearnerRef::Remote(actor) => Ok(actor.set_state(state).get()?),
        }
    }

    fn device(&self) -> Result<String, TrainError> {
        match self {
            LearnerRef::Local(learner) => Ok(learner.device()),
            LearnerRef::Remote(actor) => Ok(actor.device().get()?),
        }
    }
}

/// How long Learner actors may wait for their placement group.
const LEARNER_PLACEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The PPO Learners of a run: one in the driver, one actor, or several
/// data-parallel actors in a placement group that average their gradients.
pub struct PpoLearners {
    group: LearnerGroup<LearnerRef>,
    /// Kept so the bundles stay reserved while the Learners live.
    _placement: Option<PlacementGroup>,
}

impl PpoLearners {
    pub fn new(config: PpoLearnerConfig, learners: &LearnersConfig) -> Result<Self, TrainError> {
        let count = learners.num_learners;
        let num_gpus = learners.num_gpus_per_learner;
        if count == 0 {
            return Ok(PpoLearners {
                group: LearnerGroup::new(vec![LearnerRef::Local(Box::new(PpoLearner::new(
                    config,
                )))]),
                _placement: None,
            });
        }
        // RLlib's `num_cpus_per_learner: auto`: a CPU Learner takes a core, a
        // GPU Learner only its GPU.
        let num_cpus = if num_gpus > 0.0 { 0.0 } else { 1.0 };
        let placement = if count > 1 || num_gpus > 0.0 {
            let group = learner_placement_group(count, num_cpus, num_gpus)?;
            group.wait(LEARNER_PLACEMENT_TIMEOUT)?;
            Some(group)
        } else {
            None
        };
        let actors = (0..count)
            .map(|index| {
                let mut options = PpoLearner::options().num_cpus(num_cpus).num_gpus(num_gpus);
                if let Some(group) = &placement {
                    options = options.scheduling_strategy(group.bundle(index));
                }
                options.remote(config.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if count > 1 {
            let group_name = data_parallel_group_name();
            let joins: Vec<_> = actors
                .iter()
                .enumerate()
                .map(|(rank, actor)| {
                    actor.join_data_parallel_group(group_name.clone(), rank, count)
                })
                .collect();
            oxray_core::get_all(&joins)?;
        }
        Ok(PpoLearners {
            group: LearnerGroup::new(actors.into_iter().map(LearnerRef::Remote).collect()),
            _placement: placement,
        })
    }

    /// One PPO update on `batch` by every Learner, with the averaged metrics
    /// and the batch's advantages; the first error any of them reports (a
    /// non-finite loss, a failed all-reduce, a dead actor) fails the update.
    pub fn update(
        &mut self,
        batch: &SampleBatch,
        params: UpdateParams,
        iteration: u64,
    ) -> Result<(Metrics, Vec<f32>), TrainError> {
        // Every Learner computes GAE over the whole batch: keep the first's.
        let mut batch_advantages = None;
        let metrics = self.group.update(
            |learner| Ok(learner.start_update(batch, params)),
            |pending| {
                let outcome = match pending {
                    PendingUpdate::Done(outcome) => outcome,
                    PendingUpdate::Remote(outcome) => outcome.get()?,
                };
                match outcome {
                    UpdateOutcome::Trained {
                        metrics,
                        advantages,
                    } => {
                        batch_advantages.get_or_insert(advantages);
                        Ok(metrics)
                    }
                    UpdateOutcome::NonFiniteLoss(reason) => {
                        Err(TrainError::NonFiniteLoss { iteration, reason })
                    }
                    UpdateOutcome::Failed(reason) => Err(TrainError::Learner(reason)),
                }
            },
        )?;
        Ok((metrics, batch_advantages.unwrap_or_default()))
    }

    /// The weights every Learner holds (they step in sync).
    pub fn weights(&self) -> Result<Vec<u8>, TrainError> {
        self.group.first().weights()
    }

    pub fn state(&self) -> Result<LearnerState, TrainError> {
        self.group.first().state()
    }

    /// Gives every Learner `state`, so data-parallel replicas resume in sync.
    pub fn set_state(&mut self, state: &LearnerState) -> Result<(), TrainError> {
        self.group
            .learners_mut()
            .iter_mut()
            .try_for_each(|learner| learner.set_state(state.clone()))
    }

    /// Where each Learner's model lives (`cpu`, `cuda:0`).
    pub fn devices(&self) -> Result<Vec<String>, TrainError> {
        self.group
            .learners()
            .iter()
            .map(LearnerRef::device)
            .collect()
    }
}

/// Collective groups are named in the cluster's key-value store, which
/// several drivers may share: the process id, the time and a counter make the
/// name unique to this set of Learners.
fn data_parallel_group_name() -> String {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos());
    format!(
        "ppo-learners-{}-{nanos}-{}",
        std::process::id(),
        CREATED.fetch_add(1, Ordering::Relaxed)
    )
}

/// 1 − Var[targets − values] / Var[targets]: how much of the return the value
/// function explains.
fn explained_variance(values: &[f32], targets: &[f32]) -> f64 {
    let var = |xs: &mut dyn Iterator<Item = f64>| {
        let xs: Vec<f64> = xs.collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64
    };
    let target_var = var(&mut targets.iter().map(|&t| f64::from(t)));
    let residual_var = var(&mut targets.iter().zip(values).map(|(&t, &v)| f64::from(t - v)));
    if target_var == 0.0 {
        f64::NAN
    } else {
        1.0 - residual_var / target_var
    }
}

// ---------------------------------------------------------------------------
// 4. Algorithm
// ---------------------------------------------------------------------------

/// Counters and state that a checkpoint carries besides the weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Progress {
    iteration: u64,
    env_steps_sampled: u64,
    env_steps_trained: u64,
    /// Training time of earlier sessions of a resumed run.
    time_before_s: f64,
    weights_version: u64,
    kl_coeff: f64,
    episodes: EpisodeWindow,
    env_runner_rngs: Vec<ChaCha8Rng>,
}

pub struct Ppo {
    config: ExperimentConfig,
    env_runners: EnvRunnerGroup,
    learners: PpoLearners,
    progress: Progress,
    started: Instant,
    last_iteration: LastIteration,
}

/// What the latest iteration's histograms are made of, kept rather than
/// computed so an iteration that logs none pays only for moving them here.
#[derive(Default)]
struct LastIteration {
    actions: Vec<f32>,
    action_dim: usize,
    advantages: Vec<f32>,
    weights: Vec<u8>,
}

impl Ppo {
    pub fn new(config: &ExperimentConfig) -> Result<Self, TrainError> {
        let policy = policy_spec(&config.env, &config.model)?;
        let runner_config = EnvRunnerConfig {
            env: config.env.clone(),
            num_envs: config.env_runners.num_envs_per_env_runner,
            rollout_fragment_length: config.rollout_fragment_length(),
            policy: policy.clone(),
            seed: config.seed,
            worker_index: 0,
            explore: true,
        };
        let learner_config = PpoLearnerConfig {
            learner: LearnerConfig {
                policy,
                lr: config.training.lr_at(0),
                grad_clip: config.training.grad_clip,
                use_gpu: config.learners.num_gpus_per_learner > 0.0,
                seed: config.seed,
            },
            training: config.training.clone(),
        };
        let learners = PpoLearners::new(learner_config, &config.learners)?;
        let mut env_runners = EnvRunnerGroup::new(
            &runner_config,
            config.env_runners.num_env_runners,
            config.env_runners.num_cpus_per_env_runner,
        )?;
        env_runners.sync_weights(0, learners.weights()?)?;
        Ok(Ppo {
            config: config.clone(),
            env_runners,
            learners,
            progress: Progress {
                kl_coeff: config.training.kl_coeff,
                ..Progress::default()
            },
            started: Instant::now(),
            last_iteration: LastIteration::default(),
        })
    }
}

impl Algorithm for Ppo {
    fn train(&mut self) -> Result<Metrics, TrainError> {
        let iteration = self.progress.iteration + 1;
        let cfg = &self.config.training;
        let sample_start = Instant::now();
        let mut batch = SampleBatch::default();
        while batch.len() < cfg.train_batch_size {
            for rollout in self.env_runners.sample()? {
                self.progress.episodes.push(&rollout.episodes);
                batch.append(&rollout.batch);
            }
        }
        let sample_s = sample_start.elapsed().as_secs_f64();
        self.progress.env_steps_sampled += batch.len() as u64;

        let learn_start = Instant::now();
        let params = UpdateParams {
            lr: cfg.lr_at(self.progress.env_steps_sampled),
            kl_coeff: self.progress.kl_coeff,
            shuffle_seed: self
                .config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(iteration),
        };
        let (mut result, advantages) = self.learners.update(&batch, params, iteration)?;
        self.progress.env_steps_trained += batch.len() as u64;
        // RLlib's adaptive KL coefficient.
        let kl = result["learners/default_policy/mean_kl_loss"];
        if kl > 2.0 * cfg.kl_target {
            self.progress.kl_coeff *= 1.5;
        } else if kl < 0.5 * cfg.kl_target {
            self.progress.kl_coeff *= 0.5;
        }
        self.progress.weights_version += 1;
        let weights = self.learners.weights()?;
        self.env_runners
            .sync_weights(self.progress.weights_version, weights.clone())?;
        let learn_s = learn_start.elapsed().as_secs_f64();

        self.progress.iteration = iteration;
        let time_total_s = self.progress.time_before_s + self.started.elapsed().as_secs_f64();
        self.progress.episodes.report(&mut result);
        result.extend(self.env_runners.fault_tolerance());
        result.extend([
            (metrics::TRAINING_ITERATION.to_string(), iteration as f64),
            (metrics::TIME_TOTAL_S.to_string(), time_total_s),
            (
                metrics::NUM_ENV_STEPS_SAMPLED_LIFETIME.to_string(),
                self.progress.env_steps_sampled as f64,
            ),
            (
                "num_env_steps_trained_lifetime".to_string(),
                self.progress.env_steps_trained as f64,
            ),
            (
                "env_runners/num_env_steps_sampled".to_string(),
                batch.len() as f64,
            ),
            (
                "env_runners/num_env_steps_sampled_per_s".to_string(),
                batch.len() as f64 / sample_s,
            ),
            (
                "num_env_steps_trained_per_s".to_string(),
                batch.len() as f64 / learn_s,
            ),
            ("timers/env_runner_sampling_timer".to_string(), sample_s),
            ("timers/learner_update_timer".to_string(), learn_s),
        ]);
        self.last_iteration = LastIteration {
            action_dim: batch.action_dim,
            actions: batch.actions,
            advantages,
            weights,
        };
        Ok(result)
    }

    fn histograms(&self) -> Result<Histograms, TrainError> {
        let last = &self.last_iteration;
        let mut histograms = Histograms::new();
        metrics::add_action_histograms(&last.actions, last.action_dim, &mut histograms);
        histograms.insert(
            "learners/default_policy/advantages".into(),
            last.advantages.clone(),
        );
        add_weight_histograms(
            &last.weights,
            "learners/default_policy/weights",
            &mut histograms,
        )
        .map_err(|e| TrainError::Learner(format!("cannot read the weights: {e}")))?;
        Ok(histograms)
    }

    fn save(&self, checkpoint_dir: &Path) -> Result<PathBuf, TrainError> {
        let mut progress = self.progress.clone();
        progress.time_before_s += self.started.elapsed().as_secs_f64();
        progress.env_runner_rngs = self.env_runners.rng_states()?;
        let checkpoint = Checkpoint {
            algorithm: self.config.algorithm.name().to_string(),
            config: serde_json::to_value(&self.config).expect("configs serialize"),
            state: serde_json::to_value(&progress).expect("progress serializes"),
            learner: self.learners.state()?,
        };
        let name = format!("checkpoint_{:06}", progress.iteration);
        Ok(checkpoint::save(checkpoint_dir, &name, &checkpoint)?)
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        let progress: Progress = serde_json::from_value(checkpoint.state.clone())
            .map_err(|e| TrainError::Restore(format!("training state: {e}")))?;
        self.learners.set_state(&checkpoint.learner)?;
        self.env_runners
            .sync_weights(progress.weights_version, checkpoint.learner.weights.clone())?;
        self.env_runners
            .set_rng_states(progress.env_runner_rngs.clone())?;
        self.progress = progress;
        self.started = Instant::now();
        Ok(())
    }

    fn iteration(&self) -> u64 {
        self.progress.iteration
    }

    fn learner_devices(&self) -> Result<Vec<String>, TrainError> {
        self.learners.devices()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    /// Two samples, two actions; every term worked out by hand.
    #[test]
    fn loss_terms_match_hand_computed_values() {
        let p = [0.5f32, 0.5, 0.8, 0.2];
        let dist = ActionDistribution::categorical(Tensor::from_slice(&p).log().view([2, 2]));
        let old_dist =
            ActionDistribution::categorical(Tensor::from_slice(&[0.5f32; 4]).log().view([2, 2]));
        let mb = Minibatch {
            obs: Tensor::zeros([2, 1], (Kind::Float, tch::Device::Cpu)),
            actions: Tensor::from_slice(&[0.0f32, 0.0]).view([2, 1]),
            // old π(a) = 0.25 and 0.5 → r = 0.5/0.25 = 2, 0.8/0.5 = 1.6
            old_logp: Tensor::from_slice(&[0.25f32.ln(), 0.5f32.ln()]),
            old_dist,
            advantages: Tensor::from_slice(&[1.0f32, -1.0]),
            value_targets: Tensor::from_slice(&[1.0f32, 5.0]),
        };
        let values = Tensor::from_slice(&[0.0f32, 0.0]);
        let config = PpoTraining {
            clip_param: 0.2,
            vf_clip_param: Some(10.0),
            vf_loss_coeff: 0.5,
            entropy_coeff: 0.01,
            use_kl_loss: true,
            normalize_advantages: false,
            ..PpoTraining::default()
        };
        let loss = ppo_loss(&dist, &values, &mb, &config, 0.2);
        // min(2·1, 1.2·1) = 1.2; min(1.6·−1, 1.2·−1) = −1.6 → L^CLIP = −0.2
        assert!((scalar(&loss.policy_loss) - 0.2).abs() < 1e-5);
        // squared errors 1 and 25, the latter clipped to 10 → 5.5
        assert!((scalar(&loss.vf_loss) - 5.5).abs() < 1e-5);
        let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        let entropy = (h(0.5) + h(0.8)) / 2.0;
        assert!((scalar(&loss.entropy) - entropy).abs() < 1e-5);
        // KL(old ‖ new): 0 for the first row; 0.5·ln(0.5/0.8) + 0.5·ln(0.5/0.2)
        let kl = (0.5 * (0.5f64 / 0.8).ln() + 0.5 * (0.5f64 / 0.2).ln()) / 2.0;
        assert!((scalar(&loss.mean_kl) - kl).abs() < 1e-5);
        let total = 0.2 + 0.5 * 5.5 - 0.01 * entropy + 0.2 * kl;
        assert!((scalar(&loss.total) - total).abs() < 1e-5);
    }

    #[test]
    fn lr_schedule_interpolates_between_points() {
        let config = PpoTraining {
            lr_schedule: Some(vec![(0, 1e-3), (1000, 0.0)]),
            ..PpoTraining::default()
        };
        assert_eq!(config.lr_at(0), 1e-3);
        assert!((config.lr_at(250) - 7.5e-4).abs() < 1e-12);
        assert_eq!(config.lr_at(5000), 0.0);
    }
}
