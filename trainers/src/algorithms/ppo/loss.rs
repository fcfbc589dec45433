//! PPO's loss, readable top to bottom with the paper's names (Schulman et
//! al. 2017, as CleanRL's ppo.py): the ratio r_t(θ), the clipped surrogate
//! L^CLIP, the value loss L^VF, the entropy bonus S, and RLlib's optional KL
//! penalty β·KL.

use oxray_rl::distributions::ActionDistribution;
use tch::{Kind, Tensor};

use super::config::PpoConfig;

/// One minibatch, already on the Learner's device.
pub struct Minibatch {
    pub obs: Tensor,
    pub actions: Tensor,
    /// log π_θold(a_t|s_t), as recorded while sampling.
    pub old_logp: Tensor,
    /// π_θold(·|s_t) before this update, for the KL term; `None` when the
    /// config has no KL term (`use_kl_loss: false`), which then costs nothing.
    pub old_dist: Option<ActionDistribution>,
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
    /// E_t[KL(π_θold ‖ π_θ)], when the minibatch carries π_θold.
    pub mean_kl: Option<Tensor>,
}

/// L = −L^CLIP + c_vf·L^VF − c_ent·S + β·KL, from the current policy's
/// distribution `dist` and values `values` on minibatch `mb`.
pub fn ppo_loss(
    dist: &ActionDistribution,
    values: &Tensor,
    mb: &Minibatch,
    config: &PpoConfig,
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
    let mean_kl = mb
        .old_dist
        .as_ref()
        .map(|old_dist| old_dist.kl(dist).mean(Kind::Float));
    let mut total =
        &policy_loss + &vf_loss * config.vf_loss_coeff - &entropy * config.entropy_coeff;
    if let (true, Some(mean_kl)) = (config.use_kl_loss, &mean_kl) {
        total += mean_kl * kl_coeff;
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
            old_dist: Some(old_dist),
            advantages: Tensor::from_slice(&[1.0f32, -1.0]),
            value_targets: Tensor::from_slice(&[1.0f32, 5.0]),
        };
        let values = Tensor::from_slice(&[0.0f32, 0.0]);
        let config = PpoConfig {
            clip_param: 0.2,
            vf_clip_param: Some(10.0),
            vf_loss_coeff: 0.5,
            entropy_coeff: 0.01,
            use_kl_loss: true,
            normalize_advantages: false,
            ..PpoConfig::default()
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
        assert!((scalar(loss.mean_kl.as_ref().unwrap()) - kl).abs() < 1e-5);
        let total = 0.2 + 0.5 * 5.5 - 0.01 * entropy + 0.2 * kl;
        assert!((scalar(&loss.total) - total).abs() < 1e-5);
    }
}
