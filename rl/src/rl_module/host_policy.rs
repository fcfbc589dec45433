//! The acting half of a small MLP module on the host: what an EnvRunner
//! calls instead of [`RLModule::compute_actions`] when the module's encoder
//! is an MLP small enough that plain loops beat libtorch's per-op dispatch
//! ([`HostPolicy::for_module`]). It is a copy of the weights taken when they
//! change and acts exactly as the module would: the same logits, the same
//! sampling code ([`crate::distributions::sample_categorical_rows`],
//! [`crate::distributions::sample_gaussian_rows`], ε-greedy) drawing from the
//! same RNG in the same order, so a seeded run samples the same actions
//! either way (up to float rounding at a sampling boundary). CNN encoders,
//! SAC's squashed Gaussian and large networks stay on libtorch.

use rand_chacha::ChaCha8Rng;

use super::host_mlp::{DenseLayer, HostMlp};
use super::host_q_head::{draw_head_noise, head_is_noisy, HostHeadLayer};
use super::q_network::epsilon_greedy;
use super::RLModule;
use crate::distributions::{argmax, sample_categorical_rows, sample_gaussian_rows};
use crate::host_distribution::log_softmax;
use crate::schedule::Schedule;

/// Above this many multiply-adds per step (rows × weights) libtorch's
/// matrix kernels outrun the plain loops by more than its dispatch costs:
/// a few hundred thousand multiply-adds take the loops some 50-100 µs, about
/// what libtorch spends on dispatch for an MLP's forward pass.
pub const HOST_FORWARD_MAX_MULTIPLY_ADDS: usize = 1 << 18;

pub enum HostPolicy {
    /// An actor-critic's policy over a Discrete space.
    Categorical { encoder: HostMlp, head: DenseLayer },
    /// An actor-critic's policy over a Box, with its state-independent log σ.
    Gaussian {
        encoder: HostMlp,
        head: DenseLayer,
        log_std: Vec<f32>,
    },
    /// A Q-network acting ε-greedily, or, with a noisy head, greedily
    /// under fresh noise.
    EpsilonGreedy {
        encoder: HostMlp,
        head: QHead<HostHeadLayer>,
        epsilon: Schedule,
        /// C51's atoms z, when the head gives logits over them.
        atoms: Option<Vec<f32>>,
    },
}

/// A Q-network's head over layers of type `L`: libtorch's in the module,
/// weight copies for acting ([`HostHeadLayer`]), places in a flat parameter
/// vector for training ([`super::FlatHeadLayer`]), or each layer's noise.
#[derive(Clone, Debug, PartialEq)]
pub enum QHead<L> {
    Plain(L),
    /// Q = V + A − mean A.
    Dueling {
        value: L,
        advantage: L,
    },
}

impl<L> QHead<L> {
    /// The same head over `f` of each layer, called in the layers' order
    /// (the value layer before the advantage layer).
    pub fn map<T>(&self, mut f: impl FnMut(&L) -> T) -> QHead<T> {
        match self {
            QHead::Plain(head) => QHead::Plain(f(head)),
            QHead::Dueling { value, advantage } => QHead::Dueling {
                value: f(value),
                advantage: f(advantage),
            },
        }
    }

    /// Each layer beside the same layer of `other`, a head of the same shape.
    ///
    /// # Panics
    /// If one head is dueling and the other is not.
    pub fn zip<'a, T>(&'a self, other: &'a QHead<T>) -> QHead<(&'a L, &'a T)> {
        match (self, other) {
            (QHead::Plain(a), QHead::Plain(b)) => QHead::Plain((a, b)),
            (
                QHead::Dueling { value, advantage },
                QHead::Dueling {
                    value: other_value,
                    advantage: other_advantage,
                },
            ) => QHead::Dueling {
                value: (value, other_value),
                advantage: (advantage, other_advantage),
            },
            _ => panic!("a plain and a dueling head zipped"),
        }
    }

    /// The same head over `f` of each layer; `None` if `f` gives none for one.
    pub fn try_map<T>(&self, mut f: impl FnMut(&L) -> Option<T>) -> Option<QHead<T>> {
        Some(match self {
            QHead::Plain(head) => QHead::Plain(f(head)?),
            QHead::Dueling { value, advantage } => QHead::Dueling {
                value: f(value)?,
                advantage: f(advantage)?,
            },
        })
    }
}

/// The dueling head's outputs in place, atom by atom (one atom without
/// C51): `advantages` (`[B, n, atoms]`) becomes V + A − mean_a A, for
/// `values` V (`[B, atoms]`).
pub fn combine_dueling(advantages: &mut [f32], values: &[f32], n: usize, atoms: usize) {
    for (row, v) in advantages
        .chunks_exact_mut(n * atoms)
        .zip(values.chunks_exact(atoms))
    {
        for (atom, v) in v.iter().enumerate() {
            let mean = row.iter().skip(atom).step_by(atoms).sum::<f32>() / n as f32;
            row.iter_mut()
                .skip(atom)
                .step_by(atoms)
                .for_each(|a| *a += v - mean);
        }
    }
}

/// C51's Q(s, a) from its head's logits (`[B, A, K]`): each action's
/// expected return under the softmax of its logits over the atoms z
/// (`atoms`, `[K]`). Without C51 the head's outputs are the Q-values.
pub fn mean_returns(logits: &[f32], atoms: &[f32]) -> Vec<f32> {
    logits
        .chunks_exact(atoms.len())
        .map(|logits| {
            let mut log_p = logits.to_vec();
            log_softmax(&mut log_p);
            log_p.iter().zip(atoms).map(|(l, z)| l.exp() * z).sum()
        })
        .collect()
}

impl HostPolicy {
    /// The host copy of `module`'s policy for acting on `rows` observations
    /// a step, if it has one and it is small enough to be worth it.
    pub fn for_module(module: &dyn RLModule, rows: usize) -> Option<HostPolicy> {
        module
            .host_policy()
            .filter(|policy| policy.multiply_adds() * rows <= HOST_FORWARD_MAX_MULTIPLY_ADDS)
    }

    /// Multiply-adds of one row.
    pub fn multiply_adds(&self) -> usize {
        match self {
            HostPolicy::Categorical { encoder, head }
            | HostPolicy::Gaussian { encoder, head, .. } => {
                encoder.multiply_adds() + head.multiply_adds()
            }
            HostPolicy::EpsilonGreedy { encoder, head, .. } => {
                encoder.multiply_adds()
                    + match head {
                        QHead::Plain(head) => head.multiply_adds(),
                        QHead::Dueling { value, advantage } => {
                            value.multiply_adds() + advantage.multiply_adds()
                        }
                    }
            }
        }
    }

    /// [`RLModule::compute_actions`] on host observations `obs`
    /// (`[B, obs_dim]` row-major).
    pub fn compute_actions(
        &self,
        obs: &[f32],
        explore: bool,
        env_steps: u64,
        rng: &mut ChaCha8Rng,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        let rows = logp.len();
        match self {
            HostPolicy::Categorical { encoder, head } => {
                let mut log_probs = head.forward(&encoder.forward(obs, rows), rows);
                for row in log_probs.chunks_exact_mut(head.outputs()) {
                    log_softmax(row);
                }
                sample_categorical_rows(&log_probs, head.outputs(), rng, explore, actions, logp);
            }
            HostPolicy::Gaussian {
                encoder,
                head,
                log_std,
            } => {
                let mean = head.forward(&encoder.forward(obs, rows), rows);
                let log_std = log_std.repeat(rows);
                sample_gaussian_rows(&mean, &log_std, rng, explore, actions, logp);
            }
            HostPolicy::EpsilonGreedy {
                encoder,
                head,
                epsilon,
                atoms,
            } => {
                // A noisy head explores by fresh noise each step instead of
                // ε, and evaluates with its means, as the module does.
                let noisy = head_is_noisy(head);
                let noise = explore
                    .then(|| draw_head_noise(head, rng))
                    .flatten()
                    .unwrap_or_else(|| head.map(|_| None));
                let features = encoder.forward(obs, rows);
                let k = atoms.as_ref().map_or(1, Vec::len);
                let (outputs, n) = match head.zip(&noise) {
                    QHead::Plain((head, noise)) => (
                        head.forward(noise.as_ref(), &features, rows),
                        head.outputs() / k,
                    ),
                    QHead::Dueling { value, advantage } => {
                        let n = advantage.0.outputs() / k;
                        let mut outputs =
                            advantage.0.forward(advantage.1.as_ref(), &features, rows);
                        let v = value.0.forward(value.1.as_ref(), &features, rows);
                        combine_dueling(&mut outputs, &v, n, k);
                        (outputs, n)
                    }
                };
                let means = atoms.as_deref().map(|atoms| mean_returns(&outputs, atoms));
                let q_values = means.as_deref().unwrap_or(&outputs);
                let epsilon = if explore && !noisy {
                    epsilon.value_at(env_steps)
                } else {
                    0.0
                };
                let greedy = q_values.chunks_exact(n).map(argmax);
                epsilon_greedy(greedy, epsilon, n, rng, actions, logp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::rl_module::{ActionSpace, ModelConfig, ModuleKind, ModuleSpec};

    fn spec(action_space: ActionSpace, kind: ModuleKind, model: ModelConfig) -> ModuleSpec {
        ModuleSpec {
            observation_shape: vec![5],
            observation_dtype: Default::default(),
            action_space,
            model,
            kind,
        }
    }

    /// Random weights of a scale that makes the policy far from uniform, so
    /// that a wrong layer order or transposed weight changes the actions.
    fn randomise(module: &mut dyn RLModule) {
        let n = module.flat_weights().len() as i64;
        let weights = crate::to_host(&(Tensor::randn([n], (Kind::Float, Device::Cpu)) * 0.5));
        module.set_flat_weights(&weights).unwrap();
    }

    /// The host copy draws, for the same observations and RNG, what the
    /// libtorch module draws: the same actions and, within float tolerance,
    /// the same log-probabilities, exploring and greedy, for every module
    /// kind and activation the host path covers (a noisy head's noise
    /// included: both draw it from the RNG in the same order; C51's
    /// Q-values are the mean returns under its logits).
    #[test]
    fn host_policy_acts_as_the_libtorch_module() {
        tch::manual_seed(11);
        let epsilon = Schedule(vec![(0, 0.5), (100, 0.0)]);
        let support = crate::rl_module::ValueSupport {
            num_atoms: 11,
            v_min: -3.0,
            v_max: 3.0,
        };
        let cases = [
            (
                ActionSpace::Discrete { n: 3 },
                ModuleKind::ActorCritic,
                "categorical",
            ),
            (
                ActionSpace::Box {
                    low: vec![-1.0; 2],
                    high: vec![1.0; 2],
                },
                ModuleKind::ActorCritic,
                "gaussian",
            ),
            (
                ActionSpace::Discrete { n: 4 },
                ModuleKind::QNetwork {
                    dueling: false,
                    epsilon: epsilon.clone(),
                    distributional: None,
                    noisy_sigma0: None,
                },
                "q",
            ),
            (
                ActionSpace::Discrete { n: 4 },
                ModuleKind::QNetwork {
                    dueling: true,
                    epsilon: epsilon.clone(),
                    distributional: None,
                    noisy_sigma0: None,
                },
                "dueling q",
            ),
            (
                ActionSpace::Discrete { n: 4 },
                ModuleKind::QNetwork {
                    dueling: false,
                    epsilon: epsilon.clone(),
                    distributional: None,
                    noisy_sigma0: Some(2.0),
                },
                "noisy q",
            ),
            (
                ActionSpace::Discrete { n: 4 },
                ModuleKind::QNetwork {
                    dueling: true,
                    epsilon: epsilon.clone(),
                    distributional: None,
                    noisy_sigma0: Some(2.0),
                },
                "noisy dueling q",
            ),
            (
                ActionSpace::Discrete { n: 4 },
                ModuleKind::QNetwork {
                    dueling: false,
                    epsilon: epsilon.clone(),
                    distributional: Some(support.clone()),
                    noisy_sigma0: None,
                },
                "distributional q",
            ),
            (
                ActionSpace::Discrete { n: 4 },
                ModuleKind::QNetwork {
                    dueling: true,
                    epsilon,
                    distributional: Some(support),
                    noisy_sigma0: Some(2.0),
                },
                "noisy dueling distributional q",
            ),
        ];
        for (activation, hiddens) in [
            (crate::rl_module::Activation::Tanh, vec![64, 64]),
            (crate::rl_module::Activation::Relu, vec![33]),
        ] {
            let model = ModelConfig {
                fcnet_hiddens: hiddens,
                fcnet_activation: activation,
                ..ModelConfig::default()
            };
            for (space, kind, name) in cases.clone() {
                let mut module = spec(space, kind, model.clone()).build(Device::Cpu);
                randomise(module.as_mut());
                let host = module.host_policy().expect("an MLP module");
                let action_dim = module.spec().action_space.action_dim();
                let obs = Tensor::randn([64, 5], (Kind::Float, Device::Cpu)) * 2.0;
                let host_obs = crate::to_host(&obs);
                for (explore, env_steps) in [(true, 0), (false, 0), (true, 50)] {
                    let (mut rng_torch, mut rng_host) =
                        (ChaCha8Rng::seed_from_u64(5), ChaCha8Rng::seed_from_u64(5));
                    let (mut a_torch, mut lp_torch) = (vec![0.0; 64 * action_dim], vec![0.0; 64]);
                    let (mut a_host, mut lp_host) = (a_torch.clone(), lp_torch.clone());
                    tch::no_grad(|| {
                        module.compute_actions(
                            &obs,
                            explore,
                            env_steps,
                            &mut rng_torch,
                            &mut a_torch,
                            &mut lp_torch,
                        )
                    });
                    host.compute_actions(
                        &host_obs,
                        explore,
                        env_steps,
                        &mut rng_host,
                        &mut a_host,
                        &mut lp_host,
                    );
                    let what = format!("{name}, {activation:?}, explore {explore}");
                    for (t, h) in a_torch.iter().zip(&a_host) {
                        assert!(
                            (t - h).abs() <= 1e-4 * t.abs().max(1.0),
                            "{what}: {a_torch:?} vs {a_host:?}"
                        );
                    }
                    for (t, h) in lp_torch.iter().zip(&lp_host) {
                        assert!(
                            (t - h).abs() <= 1e-4 * t.abs().max(1.0),
                            "{what}: {lp_torch:?} vs {lp_host:?}"
                        );
                    }
                    assert_eq!(rng_torch, rng_host, "{what}: both drew as many numbers");
                }
            }
        }
    }

    /// Networks too large for the loops, and CNN encoders, stay on libtorch.
    #[test]
    fn large_and_convolutional_modules_stay_on_libtorch() {
        let large = ModelConfig {
            fcnet_hiddens: vec![1024, 1024],
            ..ModelConfig::default()
        };
        let module = spec(
            ActionSpace::Discrete { n: 2 },
            ModuleKind::ActorCritic,
            large,
        )
        .build(Device::Cpu);
        assert!(module.host_policy().is_some());
        assert!(HostPolicy::for_module(module.as_ref(), 1).is_none());
        let image = ModuleSpec {
            observation_shape: vec![10, 10, 3],
            observation_dtype: crate::ObsDType::U8,
            ..spec(
                ActionSpace::Discrete { n: 2 },
                ModuleKind::ActorCritic,
                ModelConfig::default(),
            )
        };
        assert!(image.build(Device::Cpu).host_policy().is_none());
    }
}
