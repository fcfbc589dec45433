//! C51's loss on the host, with its gradient: the terms of [`super::c51_loss`]
//! (a*, the projected target distribution m, the cross-entropy), computed on
//! a [`HostQNetwork`]'s forward passes, then ∂L/∂logits taken back through
//! the network into the flat gradient. A CPU Learner of a small MLP C51
//! network takes its steps through this instead of libtorch's autograd, as
//! the plain DQN loss does ([`super::host_loss`]); the parity test below
//! holds it to the libtorch loss.
//!
//! The cross-entropy of a softmax has a short gradient:
//! ∂(−Σ_i m_i·log p_i)/∂logit_i = p_i·Σ_j m_j − m_i.

use oxray_rl::distributions::argmax;
use oxray_rl::host_distribution::log_softmax;
use oxray_rl::replay_buffer::ReplayBatch;
use oxray_rl::rl_module::{HostQNetwork, ValueSupport};

use super::host_loss::{HostDqnLoss, NetworkParams};

/// L over the replayed `batch` at the `online` and `target` networks'
/// parameters, for C51's `support`, adding ∂L/∂θ into `grad`.
///
/// # Panics
/// If `network` is not distributional.
pub fn host_c51_loss(
    network: &HostQNetwork,
    (online, target): (NetworkParams, NetworkParams),
    batch: &ReplayBatch,
    support: &ValueSupport,
    double_q: bool,
    grad: &mut [f32],
) -> HostDqnLoss {
    let atoms = network.atoms().expect("a distributional network");
    let (rows, n, k) = (batch.len(), network.num_actions(), atoms.len());
    let pass = |params: NetworkParams, obs: &[f32]| network.forward(params.theta, params.noise, obs, rows);
    // Logits over the atoms (and their mean returns) of Q_θ(s_t, ·),
    // Q_θ⁻(s_{t+n}, ·), and Q_θ(s_{t+n}, ·) to pick a* with double Q.
    let online_pass = pass(online, &batch.obs);
    let next_target = pass(target, &batch.next_obs);
    let next_online = double_q.then(|| pass(online, &batch.next_obs));
    let picking_q = next_online.as_ref().unwrap_or(&next_target).q_values();
    let atom_logits = |outputs: &[f32], t: usize, action: usize| {
        outputs[(t * n + action) * k..(t * n + action + 1) * k].to_vec()
    };
    let (v_min, v_max) = (support.v_min as f32, support.v_max as f32);
    let spacing = support.spacing() as f32;

    let mut d_logits = vec![0.0; rows * n * k];
    let mut td_errors = Vec::with_capacity(rows);
    let (mut total, mut q_sum) = (0.0, 0.0);
    for t in 0..rows {
        let action = batch.actions[t] as usize;
        // log p(s_t, a_t)
        let mut log_p = atom_logits(&online_pass.outputs, t, action);
        log_softmax(&mut log_p);
        // p(s_{t+n}, a*)
        let best_next = argmax(&picking_q[t * n..(t + 1) * n]);
        let mut p_next = atom_logits(&next_target.outputs, t, best_next);
        log_softmax(&mut p_next);
        p_next.iter_mut().for_each(|p| *p = p.exp());
        // T z_j = R + γ^n (1 − done) z_j, clipped to the support; its mass
        // goes to the atoms either side of b_j = (T z_j − V_min)/Δz.
        let not_done = if batch.terminateds[t] { 0.0 } else { 1.0 };
        let mut m = vec![0.0f32; k];
        for (z, p) in atoms.iter().zip(&p_next) {
            let target_atom = (batch.rewards[t] + batch.discounts[t] * not_done * z).clamp(v_min, v_max);
            let b = ((target_atom - v_min) / spacing).clamp(0.0, (k - 1) as f32);
            let (lower, upper) = (b.floor(), b.ceil());
            if lower == upper {
                m[lower as usize] += p;
            } else {
                m[lower as usize] += p * (upper - b);
                m[upper as usize] += p * (b - lower);
            }
        }
        // L_t = −Σ_i m_i log p_i(s_t, a_t), also the transition's priority.
        let cross_entropy: f32 = -m.iter().zip(&log_p).map(|(m, l)| m * l).sum::<f32>();
        let weight = batch.weights[t];
        total += f64::from(weight * cross_entropy);
        q_sum += f64::from(log_p.iter().zip(atoms).map(|(l, z)| l.exp() * z).sum::<f32>());
        td_errors.push(cross_entropy);
        let m_total: f32 = m.iter().sum();
        let d_row = &mut d_logits[(t * n + action) * k..(t * n + action + 1) * k];
        for ((d, l), m) in d_row.iter_mut().zip(&log_p).zip(&m) {
            *d = weight * (l.exp() * m_total - m) / rows as f32;
        }
    }
    network.backward(online.theta, &online_pass, &d_logits, grad);
    HostDqnLoss {
        total: total / rows as f64,
        td_errors,
        q_mean: q_sum / rows as f64,
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::algorithms::dqn::c51_loss;
    use crate::algorithms::dqn::host_loss::tests::{batch, minibatch, Networks};

    /// Loss, priorities (the cross-entropies), mean Q and gradient match
    /// libtorch's [`c51_loss`] for the plain, dueling and noisy heads, with
    /// and without double Q. The rewards (up to ±3) move target atoms past
    /// both ends of the support, so clipping and the projection's both
    /// neighbours are exercised.
    #[test]
    fn loss_and_gradient_match_libtorch() {
        let batch = batch(24);
        let support = ValueSupport {
            num_atoms: 11,
            v_min: -2.0,
            v_max: 3.0,
        };
        let atoms = support.atoms(Device::Cpu);
        for (dueling, noisy, double_q) in [
            (false, false, false),
            (false, false, true),
            (true, false, true),
            (true, true, false),
            (false, true, true),
        ] {
            let networks = Networks::new(dueling, noisy, Some(support.clone()));
            let (online, target) = (networks.online.module(), networks.target.module());
            let mb = minibatch(&batch);
            let torch = c51_loss(
                &online.atom_logits(&mb.obs),
                &online.q_values(&mb.next_obs),
                &target.atom_logits(&mb.next_obs),
                &support,
                &atoms,
                &mb,
                double_q,
            );
            let mut grad = networks.zero_gradient();
            let params = networks.host_params();
            let host = host_c51_loss(&networks.host, params, &batch, &support, double_q, &mut grad);
            let case = format!("dueling {dueling}, noisy {noisy}, double Q {double_q}");
            networks.assert_matches(&case, &torch, host, grad);
        }
    }
}
