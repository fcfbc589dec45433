//! A target network (DQN, SAC, APPO): a copy of a Learner's module that
//! follows it by Polyak averaging, θ⁻ ← τ·θ + (1 − τ)·θ⁻. It is built as an
//! exact copy and re-copied after a checkpoint restores the Learner, so the
//! algorithms only say when it follows and with which τ.

use std::ops::Deref;

use crate::learner::Learner;
use crate::rl_module::{initialise, polyak_update, RLModule};

pub struct TargetNetwork<M>(M);

impl<M: RLModule> TargetNetwork<M> {
    /// An exact copy of `learner`'s module, on its device.
    pub fn of(learner: &Learner<M>) -> Self {
        let spec = learner.module().spec();
        let target = TargetNetwork(initialise::<M>(spec, learner.device(), None));
        target.follow(learner, 1.0);
        target
    }

    /// Moves the target towards `learner`'s module by `tau` (1: a copy).
    pub fn follow(&self, learner: &Learner<M>, tau: f64) {
        polyak_update(self.0.var_store(), learner.module().var_store(), tau);
    }
}

impl<M> Deref for TargetNetwork<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.0
    }
}
