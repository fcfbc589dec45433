//! The hot loop of the fast path, compiled for several instruction sets.
//!
//! States are stored structure-of-arrays: field `k` of copy `i` lives at
//! `k * copies + i`, so each field is one contiguous `f64` array. The loop
//! gathers a copy's fields into the env's scalar state, runs its scalar
//! [`Dynamics::step`] and `observe`, and scatters the fields back; inlined,
//! that is plain contiguous loads and stores, and LLVM vectorizes the whole
//! body across copies. The crate is built for the baseline
//! x86-64 target (two `f64` lanes), so the same loop is also compiled with
//! AVX2 and AVX-512 enabled and the widest one the CPU supports is picked at
//! construction. Only `+ - * /`, comparisons and bit operations are involved
//! (no fused multiply-add: LLVM does not contract without fast-math), so
//! every variant computes bit-identical results and episodes stay the same on
//! every machine.

use crate::classic::{Dynamics, Math};

/// State fields the structure-of-arrays storage holds per copy; envs with
/// fewer leave the rest unused (CartPole and Acrobot have four).
pub(super) const MAX_FIELDS: usize = 4;

/// The slices one step of the fast path reads and writes; all have one
/// entry (or one `OBS_LEN` row) per copy, `states` has `MAX_FIELDS` fields
/// of one entry per copy.
pub(super) struct Batch<'a, D: Dynamics> {
    pub dynamics: &'a D,
    pub states: &'a mut [f64],
    pub actions: &'a [D::Action],
    pub obs: &'a mut [f32],
    pub rewards: &'a mut [f64],
    pub terminated: &'a mut [bool],
}

/// The widest vector instruction set the loop may use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InstructionSet {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl InstructionSet {
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return InstructionSet::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return InstructionSet::Avx2;
            }
        }
        InstructionSet::Baseline
    }
}

/// Advances every copy by one step with the widest loop `isa` allows.
pub(super) fn advance<D: Dynamics>(isa: InstructionSet, batch: Batch<'_, D>) {
    match isa {
        InstructionSet::Baseline => advance_portable(batch),
        // SAFETY: `isa` comes from `InstructionSet::detect`, which saw the CPU
        // support these features.
        #[cfg(target_arch = "x86_64")]
        InstructionSet::Avx2 => unsafe { advance_avx2(batch) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        InstructionSet::Avx512 => unsafe { advance_avx512(batch) },
    }
}

/// Copies per vector block: a multiple of every vector width times the
/// unrolling LLVM picks (8 lanes x 4 for AVX-512), so a loop over a multiple
/// of it never reaches the scalar remainder loop.
const BLOCK: usize = 32;
/// Largest observation the remainder scratch holds (Acrobot's is 6).
const MAX_OBS_LEN: usize = 8;

/// Whole blocks run in one long loop; the remaining copies (fewer than a
/// block, which is all of them for small vector envs) are padded to 8, 16 or
/// 32 lanes in a scratch copy, so they run vectorized too instead of one by
/// one.
/// Envs whose math does not vectorize just loop over their copies.
#[inline(always)]
fn advance_portable<D: Dynamics>(batch: Batch<'_, D>) {
    let Batch {
        dynamics,
        states,
        actions,
        obs,
        rewards,
        terminated,
    } = batch;
    let copies = actions.len();
    if copies == 0 {
        return;
    }
    if !<D::VectorMath as Math>::VECTORIZES {
        // Calls to libm keep the loop scalar; padding would only add work.
        let fields = field_slices(states, copies, 0..copies);
        return advance_copies(dynamics, fields, actions, obs, rewards, terminated);
    }
    let whole = copies / BLOCK * BLOCK;
    let (obs, obs_rest) = obs.split_at_mut(whole * D::OBS_LEN);
    let (rewards, reward_rest) = rewards.split_at_mut(whole);
    let (terminated, terminated_rest) = terminated.split_at_mut(whole);
    let fields = field_slices(states, copies, 0..whole);
    advance_copies(
        dynamics,
        fields,
        &actions[..whole],
        obs,
        rewards,
        terminated,
    );
    let rest = &actions[whole..];
    let tail = Tail {
        states,
        copies,
        actions: rest,
        obs: obs_rest,
        rewards: reward_rest,
        terminated: terminated_rest,
    };
    // The smallest padded width that fits, so few copies waste few lanes.
    match rest.len() {
        0 => {}
        1..=8 => advance_padded::<D, 8>(dynamics, tail),
        9..=16 => advance_padded::<D, 16>(dynamics, tail),
        _ => advance_padded::<D, BLOCK>(dynamics, tail),
    }
}

/// The copies after the last whole block: their actions and outputs, and
/// the full structure-of-arrays `states` of all `copies` (they are its last
/// entries of each field).
struct Tail<'a, D: Dynamics> {
    states: &'a mut [f64],
    copies: usize,
    actions: &'a [D::Action],
    obs: &'a mut [f32],
    rewards: &'a mut [f64],
    terminated: &'a mut [bool],
}

/// Steps the tail copies in a scratch block of `LANES` lanes, padded with
/// repeats of the last real copy (harmless values), so the loop has a fixed
/// trip count and runs vectorized.
#[inline(always)]
fn advance_padded<D: Dynamics, const LANES: usize>(dynamics: &D, tail: Tail<'_, D>) {
    let Tail {
        states,
        copies,
        actions,
        obs,
        rewards,
        terminated,
    } = tail;
    let rest = actions.len();
    let first = copies - rest;
    assert!(D::OBS_LEN <= MAX_OBS_LEN, "scratch observation too small");
    let mut scratch_states = [[0.0; LANES]; MAX_FIELDS];
    for (field, scratch) in states.chunks_exact(copies).zip(&mut scratch_states) {
        let real = &field[first..];
        scratch[..rest].copy_from_slice(real);
        scratch[rest..].fill(real[rest - 1]);
    }
    let mut scratch_actions = [actions[rest - 1]; LANES];
    scratch_actions[..rest].copy_from_slice(actions);
    let mut scratch_obs = [[0.0f32; MAX_OBS_LEN]; LANES];
    let mut scratch_rewards = [0.0; LANES];
    let mut scratch_terminated = [false; LANES];
    advance_copies(
        dynamics,
        field_slices(scratch_states.as_flattened_mut(), LANES, 0..LANES),
        &scratch_actions,
        &mut scratch_obs.as_flattened_mut()[..LANES * D::OBS_LEN],
        &mut scratch_rewards,
        &mut scratch_terminated,
    );
    for (field, scratch) in states.chunks_exact_mut(copies).zip(&scratch_states) {
        field[first..].copy_from_slice(&scratch[..rest]);
    }
    obs.copy_from_slice(&scratch_obs.as_flattened()[..rest * D::OBS_LEN]);
    rewards.copy_from_slice(&scratch_rewards[..rest]);
    terminated.copy_from_slice(&scratch_terminated[..rest]);
}

/// The `range` of copies of each field of structure-of-arrays `states`
/// holding `copies` copies.
fn field_slices(
    states: &mut [f64],
    copies: usize,
    range: std::ops::Range<usize>,
) -> [&mut [f64]; MAX_FIELDS] {
    let mut fields = states.chunks_exact_mut(copies);
    std::array::from_fn(|_| &mut fields.next().expect("MAX_FIELDS fields")[range.clone()])
}

/// Steps the copies whose fields are `fields` (each as long as `actions`;
/// `obs` has `OBS_LEN` per copy).
#[inline(always)]
fn advance_copies<D: Dynamics>(
    dynamics: &D,
    fields: [&mut [f64]; MAX_FIELDS],
    actions: &[D::Action],
    obs: &mut [f32],
    rewards: &mut [f64],
    terminated: &mut [bool],
) {
    // A local copy of the parameters, so the optimizer knows the loop's
    // stores cannot change them and keeps them in registers.
    let dynamics = dynamics.clone();
    let [f0, f1, f2, f3] = fields;
    let states = f0
        .iter_mut()
        .zip(f1.iter_mut())
        .zip(f2.iter_mut().zip(f3.iter_mut()));
    let outputs = obs
        .chunks_exact_mut(D::OBS_LEN)
        .zip(rewards.iter_mut().zip(terminated.iter_mut()));
    for ((((x0, x1), (x2, x3)), action), (obs, (reward, terminated))) in
        states.zip(actions).zip(outputs)
    {
        let mut slots = [x0, x1, x2, x3];
        let mut state = D::State::default();
        for (value, slot) in state.as_mut().iter_mut().zip(&slots) {
            *value = **slot;
        }
        let transition = dynamics.step::<D::VectorMath>(&mut state, *action);
        dynamics.observe::<D::VectorMath>(&state, obs);
        for (value, slot) in state.as_ref().iter().zip(&mut slots) {
            **slot = *value;
        }
        *reward = transition.reward;
        *terminated = transition.terminated;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn advance_avx2<D: Dynamics>(batch: Batch<'_, D>) {
    advance_portable(batch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
fn advance_avx512<D: Dynamics>(batch: Batch<'_, D>) {
    advance_portable(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classic::{Acrobot, CartPole, MountainCarContinuous};
    use crate::rng::seeded_rng;

    /// Steps `copies` copies from random states with every instruction set
    /// this CPU has and returns the bit patterns of everything computed.
    fn trajectory<D: Dynamics>(
        dynamics: &D,
        isa: InstructionSet,
        copies: usize,
        actions: &[D::Action],
    ) -> Vec<u64> {
        let mut rng = seeded_rng(Some(1));
        let mut states = vec![0.0; MAX_FIELDS * copies];
        for i in 0..copies {
            let state = dynamics.initial_state(&mut rng, None).unwrap();
            for (k, value) in state.as_ref().iter().enumerate() {
                states[k * copies + i] = *value;
            }
        }
        let mut obs = vec![0.0f32; copies * D::OBS_LEN];
        let mut rewards = vec![0.0; copies];
        let mut terminated = vec![false; copies];
        let mut bits = Vec::new();
        for step in 0..60 {
            let step_actions: Vec<D::Action> = (0..copies)
                .map(|i| actions[(i + step) % actions.len()])
                .collect();
            let batch = Batch {
                dynamics,
                states: &mut states,
                actions: &step_actions,
                obs: &mut obs,
                rewards: &mut rewards,
                terminated: &mut terminated,
            };
            advance(isa, batch);
            bits.extend(states.iter().map(|x| x.to_bits()));
            bits.extend(obs.iter().map(|x| u64::from(x.to_bits())));
            bits.extend(rewards.iter().map(|x| x.to_bits()));
            bits.extend(terminated.iter().map(|t| u64::from(*t)));
        }
        bits
    }

    #[test]
    fn every_instruction_set_computes_the_same_bits() {
        let isas: Vec<InstructionSet> = match InstructionSet::detect() {
            InstructionSet::Baseline => vec![InstructionSet::Baseline],
            #[cfg(target_arch = "x86_64")]
            InstructionSet::Avx2 => vec![InstructionSet::Baseline, InstructionSet::Avx2],
            #[cfg(target_arch = "x86_64")]
            InstructionSet::Avx512 => vec![
                InstructionSet::Baseline,
                InstructionSet::Avx2,
                InstructionSet::Avx512,
            ],
        };
        // Remainders padded to 8, 16 and 32 lanes, with and without a whole block.
        for copies in [5, 13, 37, 52] {
            let reference = trajectory(
                &CartPole::default(),
                InstructionSet::Baseline,
                copies,
                &[true, false, false],
            );
            let continuous = trajectory(
                &MountainCarContinuous::default(),
                InstructionSet::Baseline,
                copies,
                &[1.5, -0.3],
            );
            let acrobot = trajectory(&Acrobot, InstructionSet::Baseline, copies, &[0, 2, 1]);
            for &isa in &isas {
                assert_eq!(
                    trajectory(&CartPole::default(), isa, copies, &[true, false, false]),
                    reference,
                    "{isa:?}"
                );
                let other =
                    trajectory(&MountainCarContinuous::default(), isa, copies, &[1.5, -0.3]);
                assert_eq!(other, continuous, "{isa:?}");
                assert_eq!(
                    trajectory(&Acrobot, isa, copies, &[0, 2, 1]),
                    acrobot,
                    "{isa:?}"
                );
            }
        }
    }
}
