//! Action distributions: Categorical (Discrete spaces) and diagonal Gaussian
//! (Box spaces), with the log-probability, entropy and KL the losses need,
//! and the tanh-squashed Gaussian of SAC's policy ([`SquashedGaussian`]),
//! which SAC samples (reparameterised) and CQL also evaluates at recorded
//! actions; it has no entropy or KL in closed form, so it stands apart from
//! [`ActionDistribution`].
//!
//! Losses work on tensors so gradients flow. Sampling is done on the host with
//! the caller's seeded RNG rather than libtorch's global generator: the RNG
//! state can then be checkpointed and restored exactly, and for the small
//! batches an EnvRunner draws per step it is also cheaper than a chain of
//! tensor ops.

use rand::Rng;
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

pub enum ActionDistribution {
    /// `log_probs` are normalised (log-softmax of the logits), `[B, n]`.
    Categorical { log_probs: Tensor },
    /// `[B, d]` each.
    DiagGaussian { mean: Tensor, log_std: Tensor },
}

impl ActionDistribution {
    pub fn categorical(logits: Tensor) -> Self {
        ActionDistribution::Categorical {
            log_probs: logits.log_softmax(-1, Kind::Float),
        }
    }

    pub fn diag_gaussian(mean: Tensor, log_std: Tensor) -> Self {
        ActionDistribution::DiagGaussian { mean, log_std }
    }

    /// The rows `index` of this batch of distributions.
    pub fn select(&self, index: &Tensor) -> ActionDistribution {
        match self {
            ActionDistribution::Categorical { log_probs } => ActionDistribution::Categorical {
                log_probs: log_probs.index_select(0, index),
            },
            ActionDistribution::DiagGaussian { mean, log_std } => {
                ActionDistribution::DiagGaussian {
                    mean: mean.index_select(0, index),
                    log_std: log_std.index_select(0, index),
                }
            }
        }
    }

    /// log π(a|s) for actions laid out `[B, action_dim]` (a Discrete action is
    /// its index as f32), shape `[B]`.
    pub fn log_prob(&self, actions: &Tensor) -> Tensor {
        match self {
            ActionDistribution::Categorical { log_probs } => log_probs
                .gather(-1, &actions.to_kind(Kind::Int64), false)
                .squeeze_dim(-1),
            ActionDistribution::DiagGaussian { mean, log_std } => {
                let z = (actions - mean) / log_std.exp();
                (z.square() * -0.5 - log_std - HALF_LN_2PI).sum_dim_intlist(-1, false, Kind::Float)
            }
        }
    }

    /// H(π(·|s)), shape `[B]`.
    pub fn entropy(&self) -> Tensor {
        match self {
            ActionDistribution::Categorical { log_probs } => {
                -(log_probs.exp() * log_probs).sum_dim_intlist(-1, false, Kind::Float)
            }
            ActionDistribution::DiagGaussian { log_std, .. } => {
                (log_std + 0.5 + HALF_LN_2PI).sum_dim_intlist(-1, false, Kind::Float)
            }
        }
    }

    /// KL(self ‖ other), shape `[B]`.
    ///
    /// # Panics
    /// If the two distributions are of different kinds.
    pub fn kl(&self, other: &ActionDistribution) -> Tensor {
        use ActionDistribution::*;
        match (self, other) {
            (Categorical { log_probs: p }, Categorical { log_probs: q }) => {
                (p.exp() * (p - q)).sum_dim_intlist(-1, false, Kind::Float)
            }
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
                let var_ratio = ((s1 - s2) * 2.0).exp();
                let mean_term = ((m1 - m2) / s2.exp()).square();
                ((var_ratio + mean_term - 1.0) * 0.5 - (s1 - s2)).sum_dim_intlist(
                    -1,
                    false,
                    Kind::Float,
                )
            }
            _ => panic!("KL between different distribution kinds"),
        }
    }

    /// Draws one action per row into `actions` (`[B, action_dim]`) and writes
    /// its log-probability into `logp` (`[B]`). With `explore == false` the
    /// mode is taken instead (argmax, or the Gaussian mean).
    pub fn sample_into(
        &self,
        rng: &mut impl Rng,
        explore: bool,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        match self {
            ActionDistribution::Categorical { log_probs } => {
                let n = log_probs.size()[1] as usize;
                sample_categorical_rows(&crate::to_host(log_probs), n, rng, explore, actions, logp);
            }
            ActionDistribution::DiagGaussian { mean, log_std } => {
                let (mean, log_std) = (crate::to_host(mean), crate::to_host(log_std));
                sample_gaussian_rows(&mean, &log_std, rng, explore, actions, logp);
            }
        }
    }
}

/// [`ActionDistribution::sample_into`] for a Categorical whose normalised
/// log-probabilities are on the host, `[B, n]` row-major: one uniform draw
/// per row when exploring, none for the argmax. Shared with the host forward
/// pass ([`crate::rl_module::HostPolicy`]), so both draw the same actions from
/// the same RNG.
pub fn sample_categorical_rows(
    log_probs: &[f32],
    n: usize,
    rng: &mut impl Rng,
    explore: bool,
    actions: &mut [f32],
    logp: &mut [f32],
) {
    for (row, (action, logp)) in log_probs.chunks_exact(n).zip(actions.iter_mut().zip(logp)) {
        let index = if explore {
            sample_categorical(row, rng.gen::<f32>())
        } else {
            argmax(row)
        };
        *action = index as f32;
        *logp = row[index];
    }
}

/// [`ActionDistribution::sample_into`] for a diagonal Gaussian whose `mean`
/// and `log_std` (`[B, d]` each, row-major) are on the host: one standard
/// normal draw per element when exploring, the mean otherwise.
pub fn sample_gaussian_rows(
    mean: &[f32],
    log_std: &[f32],
    rng: &mut impl Rng,
    explore: bool,
    actions: &mut [f32],
    logp: &mut [f32],
) {
    let d = mean.len() / logp.len().max(1);
    for (b, logp) in logp.iter_mut().enumerate() {
        let mut total = 0.0;
        for j in 0..d {
            let i = b * d + j;
            let z: f32 = if explore {
                rng.sample(StandardNormal)
            } else {
                0.0
            };
            actions[i] = mean[i] + log_std[i].exp() * z;
            total += -0.5 * z * z - log_std[i] - HALF_LN_2PI as f32;
        }
        *logp = total;
    }
}

/// tanh(u) with u ~ N(mean, exp(log_std)²) per dimension: actions in
/// (−1, 1)^d (Haarnoja et al. 2018, appendix C).
pub struct SquashedGaussian {
    /// `[B, d]` each.
    pub mean: Tensor,
    pub log_std: Tensor,
}

impl SquashedGaussian {
    /// tanh(mean + σ·noise) and its log-probability `[B]`, differentiable in
    /// mean and log_std (the reparameterisation trick), for `noise ~ N(0, I)`
    /// shaped like `mean`.
    pub fn rsample(&self, noise: &Tensor) -> (Tensor, Tensor) {
        let u = &self.mean + self.log_std.exp() * noise;
        let gaussian_logp = noise.square() * -0.5 - &self.log_std - HALF_LN_2PI;
        // log(1 − tanh²u) = 2·(ln 2 − u − softplus(−2u)), stable for large |u|.
        let log_det = (-&u * 2.0).softplus() + &u - std::f64::consts::LN_2;
        let logp = (gaussian_logp + log_det * 2.0).sum_dim_intlist(-1, false, Kind::Float);
        (u.tanh(), logp)
    }

    /// log π(a) `[B]` of actions already in (−1, 1)^d, `[B, d]`: the
    /// Gaussian density of u = atanh(a) over |da/du| = 1 − a². Actions on
    /// the boundary (a recorded action clipped to the Box's bound) are moved
    /// `1e-6` inside it, where u stays finite.
    pub fn log_prob(&self, actions: &Tensor) -> Tensor {
        let a = actions.clamp(-1.0 + 1e-6, 1.0 - 1e-6);
        let u = a.atanh();
        let noise = (&u - &self.mean) / self.log_std.exp();
        let gaussian_logp = noise.square() * -0.5 - &self.log_std - HALF_LN_2PI;
        let log_det = (-&u * 2.0).softplus() + &u - std::f64::consts::LN_2;
        (gaussian_logp + log_det * 2.0).sum_dim_intlist(-1, false, Kind::Float)
    }

    /// Draws one action per row into `actions` (`[B, d]`, within (−1, 1))
    /// with its log-probability in `logp`; tanh(mean) with `explore == false`.
    pub fn sample_into(
        &self,
        rng: &mut impl Rng,
        explore: bool,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        let noise: Vec<f32> = (0..actions.len())
            .map(|_| {
                if explore {
                    rng.sample(StandardNormal)
                } else {
                    0.0
                }
            })
            .collect();
        let noise = Tensor::from_slice(&noise).view(self.mean.size().as_slice());
        let (squashed, log_prob) =
            tch::no_grad(|| self.rsample(&noise.to_device(self.mean.device())));
        actions.copy_from_slice(&crate::to_host(&squashed));
        logp.copy_from_slice(&crate::to_host(&log_prob));
    }
}

/// Inverse-CDF draw from normalised log-probabilities.
fn sample_categorical(log_probs: &[f32], u: f32) -> usize {
    let mut cumulative = 0.0;
    for (i, lp) in log_probs.iter().enumerate() {
        cumulative += lp.exp();
        if u < cumulative {
            return i;
        }
    }
    log_probs.len() - 1
}

/// Index of the largest value (the first of equals).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn close(t: &Tensor, expected: &[f64]) {
        let got = Vec::<f64>::try_from(&t.to_kind(Kind::Double)).unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn categorical_terms_match_hand_computed_values() {
        // probabilities 0.25 and 0.75
        let d = ActionDistribution::categorical(
            Tensor::from_slice(&[0.25f32.ln(), 0.75f32.ln()]).view([1, 2]),
        );
        close(
            &d.log_prob(&Tensor::from_slice(&[1.0f32]).view([1, 1])),
            &[0.75f64.ln()],
        );
        close(
            &d.entropy(),
            &[-(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln())],
        );
        let uniform =
            ActionDistribution::categorical(Tensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu)));
        close(
            &d.kl(&uniform),
            &[0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln()],
        );
    }

    #[test]
    fn gaussian_terms_match_hand_computed_values() {
        let d = ActionDistribution::diag_gaussian(
            Tensor::from_slice(&[1.0f32]).view([1, 1]),
            Tensor::from_slice(&[0.5f32]).view([1, 1]),
        );
        let sigma = 0.5f64.exp();
        let a = 2.0;
        let expected_logp = -0.5 * ((a - 1.0) / sigma).powi(2) - 0.5 - HALF_LN_2PI;
        close(
            &d.log_prob(&Tensor::from_slice(&[2.0f32]).view([1, 1])),
            &[expected_logp],
        );
        close(&d.entropy(), &[0.5 + 0.5 + HALF_LN_2PI]);
        let std_normal = ActionDistribution::diag_gaussian(
            Tensor::zeros([1, 1], (Kind::Float, tch::Device::Cpu)),
            Tensor::zeros([1, 1], (Kind::Float, tch::Device::Cpu)),
        );
        // KL(N(1, σ²) ‖ N(0, 1)) = (σ² + 1 − 1)/2 − ln σ
        close(
            &d.kl(&std_normal),
            &[(sigma * sigma + 1.0 - 1.0) / 2.0 - 0.5],
        );
    }

    /// The density of a = tanh(u) is N(u)·|du/da| = N(u)/(1 − a²): checked
    /// against that formula directly, far into the tails included.
    #[test]
    fn squashed_gaussian_log_prob_is_the_change_of_variables() {
        let (mean, log_std) = (0.3f64, -0.2f64);
        let d = SquashedGaussian {
            mean: Tensor::from_slice(&[mean as f32, mean as f32]).view([2, 1]),
            log_std: Tensor::from_slice(&[log_std as f32, log_std as f32]).view([2, 1]),
        };
        let noise = [0.7f64, -2.5];
        let (actions, logp) = d.rsample(&Tensor::from_slice(&noise.map(|n| n as f32)).view([2, 1]));
        let mut expected = Vec::new();
        for n in noise {
            let u = mean + log_std.exp() * n;
            let a = u.tanh();
            expected.push(-0.5 * n * n - log_std - HALF_LN_2PI - (1.0 - a * a).ln());
        }
        close(&logp, &expected);
        close(
            &actions.view(-1),
            &noise.map(|n| (mean + log_std.exp() * n).tanh()),
        );
    }

    /// Evaluating a draw's action gives the density the draw came with,
    /// and a recorded action on the bound stays finite.
    #[test]
    fn squashed_gaussian_log_prob_of_an_action_is_its_draws() {
        let d = SquashedGaussian {
            mean: Tensor::from_slice(&[0.3f32, -1.0, 0.5, 0.0]).view([2, 2]),
            log_std: Tensor::from_slice(&[-0.2f32, 0.1, -1.0, 0.4]).view([2, 2]),
        };
        let noise = Tensor::from_slice(&[0.7f32, -1.5, 0.2, 1.1]).view([2, 2]);
        let (actions, logp) = d.rsample(&noise);
        close(&d.log_prob(&actions), &Vec::<f64>::try_from(&logp).unwrap());
        let on_bound = Tensor::from_slice(&[1.0f32, -1.0, 0.0, 1.0]).view([2, 2]);
        let at_bound = Vec::<f64>::try_from(&d.log_prob(&on_bound)).unwrap();
        assert!(at_bound.iter().all(|lp| lp.is_finite()), "{at_bound:?}");
    }

    #[test]
    fn host_sampling_agrees_with_tensor_log_prob() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let d = ActionDistribution::categorical(
            Tensor::from_slice(&[0.1f32, 0.2, 0.7, 1.0, 1.0, -2.0]).view([2, 3]),
        );
        let (mut actions, mut logp) = ([0.0; 2], [0.0; 2]);
        d.sample_into(&mut rng, true, &mut actions, &mut logp);
        let logp_tensor = d.log_prob(&Tensor::from_slice(&actions).view([2, 1]));
        close(&logp_tensor, &logp.map(f64::from));
        d.sample_into(&mut rng, false, &mut actions, &mut logp);
        assert_eq!(actions, [2.0, 0.0]);
    }
}
