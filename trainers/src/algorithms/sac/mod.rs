//! SAC (Haarnoja et al. 2018): a tanh-squashed Gaussian policy (a
//! categorical one for Discrete action spaces, Christodoulou 2019) trained
//! against twin Q-functions with target networks (Polyak averaging with
//! `tau`), the entropy temperature α tuned automatically towards
//! `target_entropy`.
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the soft target, critic, actor and temperature losses,
//! - `learner`: one gradient step per replayed minibatch, each loss on its
//!   own part of the module with its own learning rate
//!   (`oxray_rl::partwise_learner`), the target networks,
//! - the training step is the off-policy loop DQN shares ([`OffPolicy`]):
//!   EnvRunners sample with the stochastic policy into the replay buffer
//!   (uniform or prioritized, n-step), replayed minibatches train the Learner.
//!
//! The module (`oxray_rl::rl_module::SoftActorCritic`) and the replay
//! buffer come from oxray-rl.

mod config;
mod learner;
mod loss;

pub use config::{SacConfig, TargetEntropy};
pub use learner::{SacLearner, SacLearnerConfig};
pub(crate) use learner::minibatch;
pub use loss::{sac_loss, Evaluations, Expectation, Minibatch, SacLoss};
#[cfg(test)]
pub(crate) use loss::fixtures;

use crate::algorithms::off_policy::OffPolicy;

/// SAC: the off-policy training step driving a [`SacLearner`].
pub type Sac = OffPolicy<SacLearner>;
