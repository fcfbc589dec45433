//! APPO's loss (RLlib's asynchronous PPO), readable top to bottom: the
//! V-trace advantages A_t (computed beforehand, see [`oxray_rl::vtrace`])
//! drive PPO's clipped surrogate whose ratio is taken against the target
//! network's policy π_target rather than the behaviour policy μ the
//! EnvRunners sampled with; the value function regresses on the V-trace
//! targets v_t; an entropy bonus and an optional KL penalty to π_target.
//! The value and entropy terms are IMPALA's ([`value_and_entropy`]).

use oxray_rl::distributions::ActionDistribution;
use tch::{Kind, Tensor};

use super::config::AppoConfig;
use crate::algorithms::impala::{value_and_entropy, ValueAndEntropy};

/// One minibatch, already on the Learner's device.
pub struct Minibatch {
    pub actions: Tensor,
    /// log μ(a_t|s_t), as recorded while sampling.
    pub behaviour_logp: Tensor,
    /// log π_target(a_t|s_t) before this update.
    pub target_logp: Tensor,
    /// π_target(·|s_t) before this update, for the KL term.
    pub target_dist: ActionDistribution,
    /// V-trace's policy-gradient advantages A_t.
    pub pg_advantages: Tensor,
    /// V-trace's value targets v_t.
    pub value_targets: Tensor,
}

/// The loss and its terms (scalars).
pub struct AppoLoss {
    pub total: Tensor,
    pub policy_loss: Tensor,
    pub vf_loss: Tensor,
    pub entropy: Tensor,
    pub mean_kl: Tensor,
}

/// L = −L^CLIP + c_vf·L^VF − c_ent·S (+ β·KL), from the current policy's
/// distribution `dist` and values `values` on minibatch `mb`.
pub fn appo_loss(
    dist: &ActionDistribution,
    values: &Tensor,
    mb: &Minibatch,
    config: &AppoConfig,
    kl_coeff: f64,
) -> AppoLoss {
    let advantages = &mb.pg_advantages;
    // w_t = clip(μ(a_t|s_t) / π_target(a_t|s_t), 0, target_worker_clipping)
    let behaviour_to_target = (&mb.behaviour_logp - &mb.target_logp)
        .exp()
        .clamp(0.0, config.appo.target_worker_clipping);
    // r_t(θ) = w_t · π_θ(a_t|s_t) / μ(a_t|s_t)  (= π_θ / π_target unclipped)
    let ratio = behaviour_to_target * (dist.log_prob(&mb.actions) - &mb.behaviour_logp).exp();
    // L^CLIP = E_t[min(r_t A_t, clip(r_t, 1−ε, 1+ε) A_t)]
    let eps = config.appo.clip_param;
    let surrogate =
        (&ratio * advantages).minimum(&(ratio.clamp(1.0 - eps, 1.0 + eps) * advantages));
    let policy_loss = -surrogate.mean(Kind::Float);
    let ValueAndEntropy { vf_loss, entropy } = value_and_entropy(dist, values, &mb.value_targets);
    let mean_kl = mb.target_dist.kl(dist).mean(Kind::Float);
    let mut total = &policy_loss + &vf_loss * config.impala.vf_loss_coeff
        - &entropy * config.impala.entropy_coeff;
    if config.appo.use_kl_loss {
        total += &mean_kl * kl_coeff;
    }
    AppoLoss {
        total,
        policy_loss,
        vf_loss,
        entropy,
        mean_kl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::appo::config::AppoKeys;
    use crate::algorithms::impala::ImpalaConfig;

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    /// Two samples, two actions; every term worked out by hand.
    #[test]
    fn loss_terms_match_hand_computed_values() {
        // π_θ(a=0) = 0.5 and 0.8; π_target(a=0) = 0.5 both; μ(a=0) = 0.25, 0.5.
        let p = [0.5f32, 0.5, 0.8, 0.2];
        let dist = ActionDistribution::categorical(Tensor::from_slice(&p).log().view([2, 2]));
        let target_dist =
            ActionDistribution::categorical(Tensor::from_slice(&[0.5f32; 4]).log().view([2, 2]));
        let mb = Minibatch {
            actions: Tensor::from_slice(&[0.0f32, 0.0]).view([2, 1]),
            behaviour_logp: Tensor::from_slice(&[0.25f32.ln(), 0.5f32.ln()]),
            target_logp: Tensor::from_slice(&[0.5f32.ln(), 0.5f32.ln()]),
            target_dist,
            pg_advantages: Tensor::from_slice(&[1.0f32, -1.0]),
            value_targets: Tensor::from_slice(&[1.0f32, 3.0]),
        };
        let values = Tensor::from_slice(&[0.0f32, 1.0]);
        let config = AppoConfig {
            impala: ImpalaConfig {
                vf_loss_coeff: 0.5,
                entropy_coeff: 0.01,
                ..ImpalaConfig::default()
            },
            appo: AppoKeys {
                clip_param: 0.2,
                use_kl_loss: true,
                ..AppoKeys::default()
            },
        };
        let loss = appo_loss(&dist, &values, &mb, &config, 0.2);
        // w = 0.25/0.5 = 0.5 and 1; r = 0.5·(0.5/0.25) = 1 and 1·(0.8/0.5) = 1.6
        // min(1·1, 1·1) = 1; min(1.6·−1, 1.2·−1) = −1.6 → L^CLIP = −0.3
        assert!((scalar(&loss.policy_loss) - 0.3).abs() < 1e-5);
        // ½·mean(1², 2²) = 1.25
        assert!((scalar(&loss.vf_loss) - 1.25).abs() < 1e-5);
        let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        let entropy = (h(0.5) + h(0.8)) / 2.0;
        assert!((scalar(&loss.entropy) - entropy).abs() < 1e-5);
        let kl = (0.5 * (0.5f64 / 0.8).ln() + 0.5 * (0.5f64 / 0.2).ln()) / 2.0;
        assert!((scalar(&loss.mean_kl) - kl).abs() < 1e-5);
        let total = 0.3 + 0.5 * 1.25 - 0.01 * entropy + 0.2 * kl;
        assert!((scalar(&loss.total) - total).abs() < 1e-5);
    }

    /// Past `target_worker_clipping` the weight stops growing: a behaviour
    /// policy far more likely than the target one cannot inflate the ratio.
    #[test]
    fn the_behaviour_to_target_weight_is_clipped() {
        let dist = ActionDistribution::categorical(Tensor::from_slice(&[0.5f32, 0.5]).log().view([1, 2]));
        let mb = Minibatch {
            actions: Tensor::from_slice(&[0.0f32]).view([1, 1]),
            // μ = 0.9, π_target = 0.1: w = 9, clipped to 2; r = 2·0.5/0.9
            behaviour_logp: Tensor::from_slice(&[0.9f32.ln()]),
            target_logp: Tensor::from_slice(&[0.1f32.ln()]),
            target_dist: ActionDistribution::categorical(
                Tensor::from_slice(&[0.1f32, 0.9]).log().view([1, 2]),
            ),
            pg_advantages: Tensor::from_slice(&[1.0f32]),
            value_targets: Tensor::from_slice(&[0.0f32]),
        };
        let config = AppoConfig {
            appo: AppoKeys {
                clip_param: 0.5,
                ..AppoKeys::default()
            },
            ..AppoConfig::default()
        };
        let loss = appo_loss(&dist, &Tensor::from_slice(&[0.0f32]), &mb, &config, 0.0);
        let ratio = 2.0 * 0.5 / 0.9;
        assert!((scalar(&loss.policy_loss) + ratio).abs() < 1e-5);
    }
}
