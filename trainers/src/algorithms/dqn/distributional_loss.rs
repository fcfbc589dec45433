//! C51's loss (Bellemare et al. 2017, Algorithm 1), readable top to bottom.
//! The network gives each action a distribution p over fixed returns
//! z_1..z_K (the support, spaced Δz on [V_min, V_max]):
//!
//! - a* = argmax_a Σ_j z_j·p_j(s_{t+n}, a), from the online network with
//!   double Q-learning and from the target network without;
//! - each target atom T z_j = R_t^(n) + γ^n·(1 − done_t)·z_j, clipped to
//!   [V_min, V_max], carries the target network's p_j(s_{t+n}, a*);
//! - that mass is projected onto the support: with b_j = (T z_j − V_min)/Δz,
//!   atom ⌊b_j⌋ gets p_j·(⌈b_j⌉ − b_j) and atom ⌈b_j⌉ gets p_j·(b_j − ⌊b_j⌋)
//!   (all of it when b_j lands on an atom), giving the target distribution m;
//! - the loss is the cross-entropy L_t = −Σ_i m_i·log p_i(s_t, a_t), weighted
//!   by prioritized replay's importance weights w_t and averaged. L_t is also
//!   each transition's new priority (RLlib's choice: the TD error has no
//!   single value here).

use oxray_rl::rl_module::ValueSupport;
use tch::{Kind, Tensor};

use super::loss::{DqnLoss, Minibatch};

/// L from the online network's atom logits of `obs` (`logits`, `[B, A, K]`)
/// and Q-values of `next_obs` (`next_online_q`, `[B, A]`, used to pick a*
/// with double Q), and the target network's atom logits of `next_obs`.
pub fn c51_loss(
    logits: &Tensor,
    next_online_q: &Tensor,
    next_target_logits: &Tensor,
    support: &ValueSupport,
    atoms: &Tensor,
    mb: &Minibatch,
    double_q: bool,
) -> DqnLoss {
    let k = support.num_atoms as i64;
    let per_action_atoms = |action: &Tensor| action.view([-1, 1, 1]).expand([-1, 1, k], false);
    // log p(s_t, a_t), [B, K]
    let log_p = logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &per_action_atoms(&mb.actions), false)
        .squeeze_dim(1);
    let m = tch::no_grad(|| {
        let next_p = next_target_logits.softmax(-1, Kind::Float);
        let best_next = if double_q {
            next_online_q.argmax(1, false)
        } else {
            (&next_p * atoms)
                .sum_dim_intlist(-1, false, Kind::Float)
                .argmax(1, false)
        };
        // p(s_{t+n}, a*), [B, K]
        let p_next = next_p
            .gather(1, &per_action_atoms(&best_next), false)
            .squeeze_dim(1);
        // T z_j = R + γ^n (1 − done) z_j, clipped to the support
        let not_done: Tensor = 1.0 - &mb.terminateds;
        let not_done_discount = (&mb.discounts * not_done).unsqueeze(1);
        let target_atoms = (mb.rewards.unsqueeze(1) + not_done_discount * atoms.unsqueeze(0))
            .clamp(support.v_min, support.v_max);
        // b_j, and its neighbouring atoms
        let b = (target_atoms - support.v_min) / support.spacing();
        let (lower, upper) = (b.floor(), b.ceil());
        let on_an_atom = lower.eq_tensor(&upper).to_kind(Kind::Float);
        let to_lower = &p_next * (&upper - &b + on_an_atom);
        let to_upper = &p_next * (&b - &lower);
        // m, [B, K]: each row's masses added at its own atoms
        let rows = b.size()[0];
        let row_start = (Tensor::arange(rows, (Kind::Int64, b.device())) * k).unsqueeze(1);
        let flat_index = |atom: &Tensor| (atom.to_kind(Kind::Int64) + &row_start).view(-1);
        Tensor::zeros([rows * k], (Kind::Float, b.device()))
            .index_add(0, &flat_index(&lower), &to_lower.view(-1))
            .index_add(0, &flat_index(&upper), &to_upper.view(-1))
            .view([rows, k])
    });
    // L_t = −Σ_i m_i log p_i(s_t, a_t)
    let cross_entropy = -(&m * &log_p).sum_dim_intlist(-1, false, Kind::Float);
    let q_taken = (log_p.exp() * atoms).sum_dim_intlist(-1, false, Kind::Float);
    DqnLoss::weighted(&cross_entropy, &mb.weights, &cross_entropy, &q_taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three rows of `per_row` values each.
    fn rows(values: &[f32], per_row: &[i64]) -> Tensor {
        Tensor::from_slice(values).view([&[3], per_row].concat().as_slice())
    }

    /// Support {−1, 0, 1}, one action, so a* is that action. Target logits
    /// put all mass on z = 1 (near enough: softmax of ±30).
    /// - Reward 0.5, discount 0.5, not done: T z = {0, 0.5, 1}; z = 1 carries
    ///   the mass to 0.5·1 + 0.5 = 1 → m = {0, 0, 1}.
    /// - Reward −0.5, discount 1: T z = {−1.5→−1, −0.5, 0.5}; the mass at
    ///   z = 1 goes to 0.5, halfway between atoms 0 and 1 → m = {0, ½, ½}.
    /// - Done, reward 0.25: every T z = 0.25 → m = {0, ¾, ¼}.
    #[test]
    fn the_target_mass_is_projected_onto_the_support_by_hand() {
        let support = ValueSupport {
            num_atoms: 3,
            v_min: -1.0,
            v_max: 1.0,
        };
        let atoms = support.atoms(tch::Device::Cpu);
        let mb = Minibatch {
            obs: rows(&[0.0; 3], &[1]),
            actions: Tensor::from_slice(&[0i64, 0, 0]),
            rewards: rows(&[0.5, -0.5, 0.25], &[]),
            next_obs: rows(&[0.0; 3], &[1]),
            terminateds: rows(&[0.0, 0.0, 1.0], &[]),
            discounts: rows(&[0.5, 1.0, 0.5], &[]),
            weights: rows(&[1.0, 1.0, 1.0], &[]),
        };
        // Uniform online distribution: log p = ln ⅓ at every atom.
        let logits = Tensor::zeros([3, 1, 3], (Kind::Float, tch::Device::Cpu));
        let next_target = rows(&[-30.0, -30.0, 30.0].repeat(3), &[1, 3]);
        let empty = Tensor::zeros([0], (Kind::Float, tch::Device::Cpu));
        let loss = c51_loss(&logits, &empty, &next_target, &support, &atoms, &mb, false);
        // Against a uniform p, the cross-entropy is ln 3 whatever m is.
        let ce = Vec::<f32>::try_from(&loss.td_errors).unwrap();
        assert!(ce.iter().all(|&c| (c - 3f32.ln()).abs() < 1e-5), "{ce:?}");
        assert!(loss.q_mean.double_value(&[]).abs() < 1e-6);

        // A network sure of one atom has −log p ≈ 0 there and ≈ 60 at the
        // others, so each row's loss is 60·(1 − m at that atom): sureness of
        // each atom in turn reads m off.
        let m_at = |atom: usize| {
            let mut row = [-30.0f32; 3];
            row[atom] = 30.0;
            let sure = rows(&row.repeat(3), &[1, 3]);
            let loss = c51_loss(&sure, &empty, &next_target, &support, &atoms, &mb, false);
            Vec::<f32>::try_from(&loss.td_errors)
                .unwrap()
                .iter()
                .map(|c| 1.0 - c / 60.0)
                .collect::<Vec<_>>()
        };
        let expected = [[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.0, 0.75, 0.25]];
        for atom in 0..3 {
            let masses = m_at(atom);
            for (row, want) in expected.iter().enumerate() {
                assert!(
                    (masses[row] - want[atom]).abs() < 1e-4,
                    "row {row} atom {atom}: {} vs {}",
                    masses[row],
                    want[atom]
                );
            }
        }
    }
}
