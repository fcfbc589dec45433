//! The action distributions of [`crate::distributions::ActionDistribution`]
//! on host vectors, with the backward pass a loss needs: log-probability,
//! entropy and KL per row, and the gradient of any weighted sum of those
//! with respect to the policy head's output (logits or mean) and the
//! state-independent log σ. For Learners that train small MLP modules in
//! plain Rust ([`crate::rl_module::HostActorCritic`]); each formula is the
//! libtorch one, so the two agree to float rounding.

use crate::minibatch_sgd::gather_rows;

const HALF_LN_2PI: f32 = 0.918_938_5;

#[derive(Clone)]
pub enum HostDistribution {
    /// Normalised log-probabilities (log-softmax of the logits), `[B, n]`.
    Categorical { log_probs: Vec<f32>, n: usize },
    /// `mean` `[B, d]`, `log_std` `[d]` shared by every row (the module's
    /// state-independent parameter).
    DiagGaussian { mean: Vec<f32>, log_std: Vec<f32> },
}

/// The gradient of a loss with respect to what the distribution was built
/// from: the logits or the mean (`[B, n]` / `[B, d]`), and log σ (`[d]`,
/// summed over rows; empty for a Categorical).
pub struct DistributionGrad {
    pub d_head: Vec<f32>,
    pub d_log_std: Vec<f32>,
}

/// Per-row weights of the terms a loss takes from the distribution:
/// ∂L/∂log π(a_t|s_t), ∂L/∂H(π(·|s_t)) and ∂L/∂KL(π_old(·|s_t) ‖ π(·|s_t)).
pub struct TermGrads<'a> {
    pub log_prob: &'a [f32],
    pub entropy: &'a [f32],
    /// With the π_old each row's KL is taken from.
    pub kl: Option<(&'a HostDistribution, &'a [f32])>,
}

impl HostDistribution {
    /// A Categorical over `n` actions from logits `[B, n]`.
    pub fn categorical(mut logits: Vec<f32>, n: usize) -> Self {
        for row in logits.chunks_exact_mut(n) {
            log_softmax(row);
        }
        HostDistribution::Categorical {
            log_probs: logits,
            n,
        }
    }

    pub fn diag_gaussian(mean: Vec<f32>, log_std: Vec<f32>) -> Self {
        HostDistribution::DiagGaussian { mean, log_std }
    }

    /// The distributions of batch rows `rows`.
    pub fn select(&self, rows: &[i64]) -> HostDistribution {
        let gather = |values: &[f32], width: usize| gather_rows(values, width, rows);
        match self {
            HostDistribution::Categorical { log_probs, n } => HostDistribution::Categorical {
                log_probs: gather(log_probs, *n),
                n: *n,
            },
            HostDistribution::DiagGaussian { mean, log_std } => HostDistribution::DiagGaussian {
                mean: gather(mean, log_std.len()),
                log_std: log_std.clone(),
            },
        }
    }

    fn width(&self) -> usize {
        match self {
            HostDistribution::Categorical { n, .. } => *n,
            HostDistribution::DiagGaussian { log_std, .. } => log_std.len(),
        }
    }

    /// log π(a|s) per row, for actions `[B, action_dim]` (a Discrete action
    /// is its index as f32).
    pub fn log_prob(&self, actions: &[f32]) -> Vec<f32> {
        match self {
            HostDistribution::Categorical { log_probs, n } => log_probs
                .chunks_exact(*n)
                .zip(actions)
                .map(|(row, &a)| row[a as usize])
                .collect(),
            HostDistribution::DiagGaussian { mean, log_std } => {
                let d = log_std.len();
                mean.chunks_exact(d)
                    .zip(actions.chunks_exact(d))
                    .map(|(mean, actions)| {
                        let mut total = 0.0;
                        for j in 0..d {
                            let z = (actions[j] - mean[j]) / log_std[j].exp();
                            total += z * z * -0.5 - log_std[j] - HALF_LN_2PI;
                        }
                        total
                    })
                    .collect()
            }
        }
    }

    /// H(π(·|s)) per row.
    pub fn entropy(&self, rows: usize) -> Vec<f32> {
        match self {
            HostDistribution::Categorical { log_probs, n } => log_probs
                .chunks_exact(*n)
                .map(|row| -row.iter().map(|lp| lp.exp() * lp).sum::<f32>())
                .collect(),
            HostDistribution::DiagGaussian { log_std, .. } => {
                let h = log_std.iter().map(|s| s + 0.5 + HALF_LN_2PI).sum::<f32>();
                vec![h; rows]
            }
        }
    }

    /// KL(old ‖ self) per row.
    ///
    /// # Panics
    /// If the two distributions are of different kinds.
    pub fn kl_from(&self, old: &HostDistribution) -> Vec<f32> {
        use HostDistribution::*;
        match (old, self) {
            (Categorical { log_probs: p, n }, Categorical { log_probs: q, .. }) => p
                .chunks_exact(*n)
                .zip(q.chunks_exact(*n))
                .map(|(p, q)| p.iter().zip(q).map(|(p, q)| p.exp() * (p - q)).sum())
                .collect(),
            (
                DiagGaussian {
                    mean: m1,
                    log_std: s1,
                },
                DiagGaussian {
                    mean: m2,
                    log_std: s2,
                },
            ) => {
                let d = s1.len();
                m1.chunks_exact(d)
                    .zip(m2.chunks_exact(d))
                    .map(|(m1, m2)| {
                        (0..d)
                            .map(|j| {
                                let var_ratio = ((s1[j] - s2[j]) * 2.0).exp();
                                let mean_term = ((m1[j] - m2[j]) / s2[j].exp()).powi(2);
                                (var_ratio + mean_term - 1.0) * 0.5 - (s1[j] - s2[j])
                            })
                            .sum()
                    })
                    .collect()
            }
            _ => panic!("KL between different distribution kinds"),
        }
    }

    /// The gradient of Σ_t (g_logp[t]·log π(a_t|s_t) + g_H[t]·H_t +
    /// g_KL[t]·KL_t) with respect to the head's output and log σ.
    pub fn backward(&self, actions: &[f32], grads: &TermGrads) -> DistributionGrad {
        match self {
            HostDistribution::Categorical { log_probs, n } => {
                let n = *n;
                // ∂L/∂log p, then back through log-softmax:
                // ∂L/∂z_j = g_j − p_j·Σ_k g_k.
                let mut d_head = vec![0.0f32; log_probs.len()];
                let old = grads.kl.map(|(old, g)| match old {
                    HostDistribution::Categorical { log_probs, .. } => (log_probs, g),
                    HostDistribution::DiagGaussian { .. } => {
                        panic!("KL between different distribution kinds")
                    }
                });
                for (t, (g, lp)) in d_head
                    .chunks_exact_mut(n)
                    .zip(log_probs.chunks_exact(n))
                    .enumerate()
                {
                    g[actions[t] as usize] += grads.log_prob[t];
                    // H = −Σ p·log p: ∂H/∂log p_j = −p_j·(log p_j + 1).
                    let g_h = grads.entropy[t];
                    for (g, lp) in g.iter_mut().zip(lp) {
                        *g -= g_h * lp.exp() * (lp + 1.0);
                    }
                    // KL = Σ p_old·(log p_old − log p): ∂/∂log p_j = −p_old_j.
                    if let Some((old_lp, g_kl)) = old {
                        let old_row = &old_lp[t * n..(t + 1) * n];
                        for (g, old) in g.iter_mut().zip(old_row) {
                            *g -= g_kl[t] * old.exp();
                        }
                    }
                    let sum: f32 = g.iter().sum();
                    for (g, lp) in g.iter_mut().zip(lp) {
                        *g -= lp.exp() * sum;
                    }
                }
                DistributionGrad {
                    d_head,
                    d_log_std: Vec::new(),
                }
            }
            HostDistribution::DiagGaussian { mean, log_std } => {
                let d = self.width();
                let mut d_head = vec![0.0f32; mean.len()];
                let mut d_log_std = vec![0.0f32; d];
                let old = grads.kl.map(|(old, g)| match old {
                    HostDistribution::DiagGaussian { mean, log_std } => (mean, log_std, g),
                    HostDistribution::Categorical { .. } => {
                        panic!("KL between different distribution kinds")
                    }
                });
                for (t, (g_mean, mean)) in d_head
                    .chunks_exact_mut(d)
                    .zip(mean.chunks_exact(d))
                    .enumerate()
                {
                    let (g_logp, g_h) = (grads.log_prob[t], grads.entropy[t]);
                    for j in 0..d {
                        let sigma = log_std[j].exp();
                        // log π = Σ −z²/2 − log σ − ½log 2π with z = (a − μ)/σ:
                        // ∂/∂μ = z/σ, ∂/∂log σ = z² − 1.
                        let z = (actions[t * d + j] - mean[j]) / sigma;
                        g_mean[j] += g_logp * z / sigma;
                        d_log_std[j] += g_logp * (z * z - 1.0);
                        // H = Σ log σ + ½ + ½log 2π: ∂H/∂log σ = 1.
                        d_log_std[j] += g_h;
                        if let Some((old_mean, old_log_std, g_kl)) = old {
                            // KL = ½(σ_old²/σ² + ((μ_old − μ)/σ)² − 1) − (log σ_old − log σ):
                            // ∂/∂μ = −(μ_old − μ)/σ², ∂/∂log σ = 1 − σ_old²/σ² − ((μ_old − μ)/σ)².
                            let diff = old_mean[t * d + j] - mean[j];
                            let var_ratio = ((old_log_std[j] - log_std[j]) * 2.0).exp();
                            let mean_term = (diff / sigma).powi(2);
                            g_mean[j] -= g_kl[t] * diff / (sigma * sigma);
                            d_log_std[j] += g_kl[t] * (1.0 - var_ratio - mean_term);
                        }
                    }
                }
                DistributionGrad { d_head, d_log_std }
            }
        }
    }
}

/// Logits to normalised log-probabilities in place, shifted by the maximum
/// so that `exp` cannot overflow (as libtorch's `log_softmax`).
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = row.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
    row.iter_mut().for_each(|x| *x -= log_sum);
}
