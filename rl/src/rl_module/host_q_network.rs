//! The training half of a small MLP [`QNetwork`] on the host: Q(s, ·) and
//! its backward pass over a Learner's flat parameter vector, so that a CPU
//! Learner takes DQN's gradient steps without libtorch's per-op dispatch
//! (see [`super::flat_mlp`]). DQN takes one gradient step per replayed
//! minibatch, so dispatch is paid on every step, not amortised over epochs
//! as in PPO. Like [`super::HostActorCritic`] it holds only where each layer
//! sits in the flat vector; the same layout reads a target network's
//! [`RLModule::flat_weights`], which lists its parameters in the same order.

use rand::Rng;

use super::flat_mlp::{FlatLayout, FlatMlp};
use super::host_actor_critic::HOST_TRAIN_MAX_PARAMETERS;
use super::host_policy::{combine_dueling, mean_returns};
use super::host_q_head::{draw_head_noise, FlatHeadLayer, HeadNoise};
use super::{QHead, QNetwork, RLModule};

pub struct HostQNetwork {
    encoder: FlatMlp,
    head: QHead<FlatHeadLayer>,
    num_actions: usize,
    /// C51's atoms z_1..z_K, when the head gives logits over them.
    atoms: Option<Vec<f32>>,
    parameters: usize,
}

/// A forward pass: the Q-values and what the backward pass reads.
pub struct QNetworkForward {
    /// The head's outputs, `[B, num_actions, K]`: C51's logits over the K
    /// atoms, or (K = 1) the Q-values.
    pub outputs: Vec<f32>,
    /// C51's Q-values, the mean returns under `outputs`.
    means: Option<Vec<f32>>,
    encoder_outputs: Vec<Vec<f32>>,
    /// The head's noise in this pass (none for each layer without).
    noise: HeadNoise,
    rows: usize,
}

impl QNetworkForward {
    /// Q(s, a), `[B, num_actions]` row-major.
    pub fn q_values(&self) -> &[f32] {
        self.means.as_deref().unwrap_or(&self.outputs)
    }
}

impl HostQNetwork {
    /// `module`'s layers located in its flat parameter vector; `None` for
    /// a CNN encoder or a module above [`HOST_TRAIN_MAX_PARAMETERS`].
    pub fn of(module: &QNetwork) -> Option<Self> {
        let layout = FlatLayout::of(module.var_store());
        let (encoder, head) = module.parts();
        let encoder = FlatMlp::locate(encoder, &layout)?;
        let head = head.try_map(|layer| FlatHeadLayer::locate(layer, &layout))?;
        let atoms = module.support().map(|(_, atoms)| crate::to_host(atoms));
        let k = atoms.as_ref().map_or(1, Vec::len);
        let (head_parameters, num_actions) = match &head {
            QHead::Plain(head) => (head.parameters(), head.outputs() / k),
            QHead::Dueling { value, advantage } => (
                value.parameters() + advantage.parameters(),
                advantage.outputs() / k,
            ),
        };
        let host = HostQNetwork {
            encoder,
            head,
            num_actions,
            atoms,
            parameters: layout.len(),
        };
        // Every parameter accounted for, or the gradient would miss some.
        let located = host.encoder.parameters() + head_parameters;
        (located == host.parameters && host.parameters <= HOST_TRAIN_MAX_PARAMETERS).then_some(host)
    }

    /// C51's atoms z, when distributional.
    pub fn atoms(&self) -> Option<&[f32]> {
        self.atoms.as_deref()
    }

    /// Atoms per action: C51's K, else 1.
    fn atoms_per_action(&self) -> usize {
        self.atoms.as_ref().map_or(1, Vec::len)
    }

    /// Length of the flat parameter (and gradient) vector.
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// Fresh noise for a NoisyNets head, drawn from `rng` as
    /// [`QNetwork::resample_noise`] draws it; `None` for a plain head.
    pub fn draw_noise(&self, rng: &mut impl Rng) -> Option<HeadNoise> {
        draw_head_noise(&self.head, rng)
    }

    /// Q(s, ·) for `rows` flattened observations `obs`, under the head's
    /// `noise` (a noisy head without it computes with its means).
    pub fn forward(
        &self,
        params: &[f32],
        noise: Option<&HeadNoise>,
        obs: &[f32],
        rows: usize,
    ) -> QNetworkForward {
        let noise = noise.cloned().unwrap_or_else(|| self.head.map(|_| None));
        let encoder_outputs = self.encoder.forward(params, obs, rows);
        let features = encoder_outputs.last().expect("at least the input");
        let outputs = match self.head.zip(&noise) {
            QHead::Plain((head, noise)) => head.forward(params, noise.as_ref(), features, rows),
            QHead::Dueling { value, advantage } => {
                let mut q = advantage
                    .0
                    .forward(params, advantage.1.as_ref(), features, rows);
                let v = value.0.forward(params, value.1.as_ref(), features, rows);
                combine_dueling(&mut q, &v, self.num_actions, self.atoms_per_action());
                q
            }
        };
        QNetworkForward {
            means: self.atoms().map(|atoms| mean_returns(&outputs, atoms)),
            outputs,
            encoder_outputs,
            noise,
            rows,
        }
    }

    /// Adds into `grad` the gradient of a loss whose gradient with respect to
    /// the head's outputs of `forward` is `d_q` (`[B, num_actions, K]`: the
    /// Q-values' without C51).
    pub fn backward(
        &self,
        params: &[f32],
        forward: &QNetworkForward,
        d_q: &[f32],
        grad: &mut [f32],
    ) {
        let rows = forward.rows;
        let features = forward.encoder_outputs.last().expect("at least the input");
        let d_features = match self.head.zip(&forward.noise) {
            QHead::Plain((head, noise)) => head
                .backward(params, noise.as_ref(), (features, d_q), grad, true)
                .expect("asked for"),
            QHead::Dueling {
                value: (value, value_noise),
                advantage: (advantage, advantage_noise),
            } => {
                // Q_a = V + A_a − mean A (atom by atom with C51):
                // ∂L/∂V = Σ_a ∂L/∂Q_a and ∂L/∂A_a = ∂L/∂Q_a − mean_b ∂L/∂Q_b.
                let (n, k) = (self.num_actions, self.atoms_per_action());
                let mut d_advantages = d_q.to_vec();
                let mut d_values = Vec::with_capacity(rows * k);
                for row in d_advantages.chunks_exact_mut(n * k) {
                    for atom in 0..k {
                        let sum = row.iter().skip(atom).step_by(k).sum::<f32>();
                        row.iter_mut()
                            .skip(atom)
                            .step_by(k)
                            .for_each(|d| *d -= sum / n as f32);
                        d_values.push(sum);
                    }
                }
                let mut d_features = value
                    .backward(
                        params,
                        value_noise.as_ref(),
                        (features, &d_values),
                        grad,
                        true,
                    )
                    .expect("asked for");
                let from_advantages = advantage
                    .backward(
                        params,
                        advantage_noise.as_ref(),
                        (features, &d_advantages),
                        grad,
                        true,
                    )
                    .expect("asked for");
                d_features
                    .iter_mut()
                    .zip(&from_advantages)
                    .for_each(|(d, a)| *d += a);
                d_features
            }
        };
        self.encoder
            .backward(params, &forward.encoder_outputs, d_features, rows, grad);
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::learner::{Learner, LearnerConfig};
    use crate::optim::flat_gradient;
    use crate::rl_module::{ActionSpace, ModelConfig, ModuleKind, ModuleSpec};
    use crate::schedule::Schedule;

    fn config(dueling: bool, model: ModelConfig) -> LearnerConfig {
        noisy_config(dueling, None, model)
    }

    fn noisy_config(dueling: bool, sigma0: Option<f64>, model: ModelConfig) -> LearnerConfig {
        head_config(dueling, sigma0, None, model)
    }

    fn head_config(
        dueling: bool,
        sigma0: Option<f64>,
        distributional: Option<crate::rl_module::ValueSupport>,
        model: ModelConfig,
    ) -> LearnerConfig {
        LearnerConfig {
            module: ModuleSpec {
                observation_shape: vec![3],
                observation_dtype: Default::default(),
                action_space: ActionSpace::Discrete { n: 4 },
                model,
                kind: ModuleKind::QNetwork {
                    dueling,
                    epsilon: Schedule(vec![(0, 0.1)]),
                    distributional,
                    noisy_sigma0: sigma0,
                },
            },
            lr: 1e-3,
            grad_clip: None,
            use_gpu: false,
            seed: 3,
        }
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = crate::max_abs_difference(a, b);
        assert!(worst < 1e-5, "{what}: off by {worst}");
    }

    /// Q-values and the gradient of Σ c·Q (c random, so every action's
    /// Q-value and every parameter gets a different weight) match
    /// libtorch's, for the plain and the dueling head.
    #[test]
    fn q_values_and_gradients_match_libtorch() {
        for dueling in [false, true] {
            let learner = Learner::<QNetwork>::new(&config(dueling, ModelConfig::default()));
            let host = HostQNetwork::of(learner.module()).expect("a small MLP");
            let theta = learner.flat_weights();
            assert_eq!(host.parameters(), theta.len());
            let obs = Tensor::randn([7, 3], (Kind::Float, Device::Cpu));
            let weights = Tensor::randn([7, 4], (Kind::Float, Device::Cpu));
            let q = learner.module().q_values(&obs);
            let params = learner.module().var_store().trainable_variables();
            let torch_grad =
                crate::to_host(&flat_gradient(&(&q * &weights).sum(Kind::Float), &params));

            let forward = host.forward(&theta, None, &crate::to_host(&obs), 7);
            assert_close(&crate::to_host(&q), forward.q_values(), "Q-values");
            let mut grad = vec![0.0; theta.len()];
            host.backward(&theta, &forward, &crate::to_host(&weights), &mut grad);
            assert_close(&torch_grad, &grad, "gradient");
        }
    }

    /// A NoisyNets head: under noise drawn from the same seed on both sides
    /// (so the host draws as libtorch does) the Q-values and the gradient,
    /// σ's included, match libtorch's; without noise both compute with μ,
    /// and σ gets no gradient.
    #[test]
    fn noisy_q_values_and_gradients_match_libtorch() {
        use rand::SeedableRng;
        for dueling in [false, true] {
            let config = noisy_config(dueling, Some(0.5), ModelConfig::default());
            let learner = Learner::<QNetwork>::new(&config);
            let host = HostQNetwork::of(learner.module()).expect("a small MLP");
            let theta = learner.flat_weights();
            assert_eq!(host.parameters(), theta.len());
            let obs = Tensor::randn([7, 3], (Kind::Float, Device::Cpu));
            let weights = Tensor::randn([7, 4], (Kind::Float, Device::Cpu));
            let params = learner.module().var_store().trainable_variables();
            for seed in [Some(9), None] {
                let noise = match seed {
                    Some(seed) => {
                        learner
                            .module()
                            .resample_noise(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
                        host.draw_noise(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
                    }
                    None => {
                        learner.module().clear_noise();
                        None
                    }
                };
                let q = learner.module().q_values(&obs);
                // Every parameter in the graph (σ is not without noise), so
                // that each gets a gradient, zero or not.
                let every_parameter = params.iter().fold(Tensor::from(0.0f32), |sum, p| {
                    sum + p.sum(Kind::Float) * 0.0
                });
                let loss = (&q * &weights).sum(Kind::Float) + every_parameter;
                let torch_grad = crate::to_host(&flat_gradient(&loss, &params));
                let forward = host.forward(&theta, noise.as_ref(), &crate::to_host(&obs), 7);
                let what = format!("dueling {dueling}, noise seed {seed:?}");
                assert_close(&crate::to_host(&q), forward.q_values(), &what);
                let mut grad = vec![0.0; theta.len()];
                host.backward(&theta, &forward, &crate::to_host(&weights), &mut grad);
                assert_close(&torch_grad, &grad, &what);
                let sigma_gradient: f32 = sigma_ranges(learner.module())
                    .into_iter()
                    .flat_map(|range| &grad[range])
                    .map(|g| g.abs())
                    .sum();
                assert_eq!(sigma_gradient > 0.0, seed.is_some(), "{what}");
            }
        }
    }

    /// C51's head (plain, dueling per atom, noisy): Q-values (the mean
    /// return under each action's logits) and the gradient of Σ c·logits
    /// over every action and atom match libtorch's.
    #[test]
    fn distributional_q_values_and_gradients_match_libtorch() {
        use rand::SeedableRng;
        let support = crate::rl_module::ValueSupport {
            num_atoms: 7,
            v_min: -2.0,
            v_max: 4.0,
        };
        for (dueling, sigma0) in [(false, None), (true, None), (true, Some(0.5))] {
            let config = head_config(
                dueling,
                sigma0,
                Some(support.clone()),
                ModelConfig::default(),
            );
            let learner = Learner::<QNetwork>::new(&config);
            let host = HostQNetwork::of(learner.module()).expect("a small MLP");
            assert_eq!(host.atoms().map(<[f32]>::len), Some(7));
            learner
                .module()
                .resample_noise(&mut rand_chacha::ChaCha8Rng::seed_from_u64(4));
            let noise = host.draw_noise(&mut rand_chacha::ChaCha8Rng::seed_from_u64(4));
            let theta = learner.flat_weights();
            let obs = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
            let weights = Tensor::randn([5, 4, 7], (Kind::Float, Device::Cpu));
            let logits = learner.module().atom_logits(&obs);
            let params = learner.module().var_store().trainable_variables();
            let torch_grad = crate::to_host(&flat_gradient(
                &(&logits * &weights).sum(Kind::Float),
                &params,
            ));

            let forward = host.forward(&theta, noise.as_ref(), &crate::to_host(&obs), 5);
            let what = format!("dueling {dueling}, σ₀ {sigma0:?}");
            assert_close(&crate::to_host(&logits), &forward.outputs, &what);
            let q = learner.module().q_values(&obs);
            assert_close(&crate::to_host(&q), forward.q_values(), &what);
            let mut grad = vec![0.0; theta.len()];
            host.backward(&theta, &forward, &crate::to_host(&weights), &mut grad);
            assert_close(&torch_grad, &grad, &what);
        }
    }

    /// Where the noisy head's σ^w and σ^b sit in the flat vector.
    fn sigma_ranges(module: &QNetwork) -> Vec<std::ops::Range<usize>> {
        let layout = FlatLayout::of(module.var_store());
        let (_, head) = module.parts();
        let layers = match head {
            QHead::Plain(layer) => vec![layer],
            QHead::Dueling { value, advantage } => vec![value, advantage],
        };
        layers
            .into_iter()
            .flat_map(|layer| {
                let crate::rl_module::HeadLayer::Noisy(noisy) = layer else {
                    panic!("a noisy head");
                };
                let (weight, bias) = noisy.sigmas();
                [weight, bias].map(|sigma| {
                    let start = layout.offset(sigma).expect("a trainable variable");
                    start..start + sigma.numel()
                })
            })
            .collect()
    }

    /// CNN encoders and large MLPs train on libtorch.
    #[test]
    fn large_and_convolutional_q_networks_train_on_libtorch() {
        let large = ModelConfig {
            fcnet_hiddens: vec![512, 512],
            ..ModelConfig::default()
        };
        assert!(
            HostQNetwork::of(Learner::<QNetwork>::new(&config(false, large)).module()).is_none()
        );
        let mut image = config(false, ModelConfig::default());
        image.module.observation_shape = vec![10, 10, 3];
        image.module.observation_dtype = crate::ObsDType::U8;
        assert!(HostQNetwork::of(Learner::<QNetwork>::new(&image).module()).is_none());
    }
}
