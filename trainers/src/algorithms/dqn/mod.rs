//! DQN (Mnih et al. 2015) with Rainbow's parts (Hessel et al. 2018): double
//! Q-learning, the dueling head, n-step returns, prioritized replay, the
//! distributional (C51) head and NoisyNets' exploration, plus
//! a target network with hard or soft updates and an ε-greedy schedule.
//!
//! - `config`: the `training:` section and its checks,
//! - `loss`: the TD target and error, Huber or squared,
//! - `distributional_loss`: C51's projected target distribution and
//!   cross-entropy, when `num_atoms` is above 1,
//! - `host_loss`, `host_distributional_loss`: the same losses and their
//!   gradients in plain Rust, for CPU Learners of small MLP Q-networks,
//! - `learner`: one gradient step per replayed minibatch, the target network,
//! - the training step is the off-policy loop SAC shares
//!   ([`OffPolicy`]): ε-greedy EnvRunners sample into the replay buffer,
//!   replayed minibatches train the Learner.

mod config;
mod distributional_loss;
mod host_distributional_loss;
mod host_loss;
mod learner;
mod loss;

pub use config::{DqnConfig, TdErrorLoss};
pub use distributional_loss::c51_loss;
pub use learner::{DqnLearner, DqnLearnerConfig};
pub use loss::{dqn_loss, DqnLoss, Minibatch};

use crate::algorithms::off_policy::OffPolicy;

/// DQN: the off-policy training step driving a [`DqnLearner`].
pub type Dqn = OffPolicy<DqnLearner>;
