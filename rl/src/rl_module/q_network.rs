//! The Q-network module (DQN): Q(s, ·) for a Discrete action space from one
//! encoder, either one linear head or the dueling head of Wang et al. 2016,
//! Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a'), which learns the state's value
//! apart from the actions' differences. It acts ε-greedily with ε following
//! an [`EpsilonSchedule`] over the run's env steps.
//!
//! With a [`ValueSupport`] it is C51's distributional network (Bellemare et
//! al. 2017): the head gives, per action, logits over `num_atoms` returns
//! z_1..z_K evenly spaced on [v_min, v_max] (dueling per atom), and
//! Q(s, a) = Σ_j p_j(s, a)·z_j is what it acts on.
//!
//! With NoisyNets (`noisy_sigma0`) the head's layers are [`NoisyLinear`]:
//! the network explores by acting greedily under fresh weight noise each
//! step (ε is not used, as in Rainbow) and evaluates with the noise's means.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::{
    linear, ActionSpace, Encoder, HostHeadLayer, HostPolicy, ModuleKind, ModuleSpec, NoisyLinear,
    QHead, RLModule,
};
use crate::schedule::Schedule;

/// ε over env steps (RLlib's `epsilon: [[0, 1.0], [10000, 0.05]]`).
pub type EpsilonSchedule = Schedule;

/// C51's fixed support: `num_atoms` returns evenly spaced on
/// [`v_min`, `v_max`] (RLlib's `num_atoms`, `v_min`, `v_max`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueSupport {
    pub num_atoms: usize,
    pub v_min: f64,
    pub v_max: f64,
}

impl ValueSupport {
    /// z_1..z_K, `[K]`.
    pub fn atoms(&self, device: Device) -> Tensor {
        Tensor::linspace(
            self.v_min,
            self.v_max,
            self.num_atoms as i64,
            (Kind::Float, device),
        )
    }

    /// Δz, the spacing of the atoms.
    pub fn spacing(&self) -> f64 {
        (self.v_max - self.v_min) / (self.num_atoms - 1) as f64
    }
}

/// One layer of the Q-network's head: plain, or NoisyNets' noisy one.
#[derive(Debug)]
pub enum HeadLayer {
    Linear(nn::Linear),
    Noisy(NoisyLinear),
}

impl Module for HeadLayer {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match self {
            HeadLayer::Linear(linear) => linear.forward(xs),
            HeadLayer::Noisy(noisy) => noisy.forward(xs),
        }
    }
}

pub struct QNetwork {
    var_store: nn::VarStore,
    encoder: Encoder,
    head: QHead<HeadLayer>,
    epsilon: EpsilonSchedule,
    num_actions: i64,
    /// C51's support and its atoms z, when distributional.
    support: Option<(ValueSupport, Tensor)>,
    spec: ModuleSpec,
}

impl QNetwork {
    /// Q(s, a) for every action, `[B, num_actions]` (C51: the mean of each
    /// action's return distribution).
    pub fn q_values(&self, obs: &Tensor) -> Tensor {
        let outputs = self.head_outputs(obs);
        match &self.support {
            None => outputs.squeeze_dim(-1),
            Some((_, atoms)) => {
                (outputs.softmax(-1, Kind::Float) * atoms).sum_dim_intlist(-1, false, Kind::Float)
            }
        }
    }

    /// C51's logits over the atoms for every action, `[B, num_actions, K]`.
    ///
    /// # Panics
    /// If the network is not distributional.
    pub fn atom_logits(&self, obs: &Tensor) -> Tensor {
        assert!(self.support.is_some(), "a distributional Q-network");
        self.head_outputs(obs)
    }

    /// The head's outputs per action and atom, `[B, num_actions, K]`, K = 1
    /// without C51; the dueling head combines V and A atom by atom.
    fn head_outputs(&self, obs: &Tensor) -> Tensor {
        let atoms = self.support.as_ref().map_or(1, |(s, _)| s.num_atoms as i64);
        let features = self.encoder.forward(obs);
        let per_action = |out: Tensor| out.view([-1, self.num_actions, atoms]);
        match &self.head {
            QHead::Plain(head) => per_action(head.forward(&features)),
            QHead::Dueling { value, advantage } => {
                let advantages = per_action(advantage.forward(&features));
                value.forward(&features).unsqueeze(1) + &advantages
                    - advantages.mean_dim(1, true, Kind::Float)
            }
        }
    }

    /// C51's support and atoms, when distributional.
    pub fn support(&self) -> Option<&(ValueSupport, Tensor)> {
        self.support.as_ref()
    }

    /// The encoder and the head's layers, for the host training pass
    /// ([`super::HostQNetwork`]).
    pub(crate) fn parts(&self) -> (&Encoder, &QHead<HeadLayer>) {
        (&self.encoder, &self.head)
    }

    /// Whether the head's layers are NoisyNets' (which explore instead of ε).
    pub fn is_noisy(&self) -> bool {
        self.noisy_layers().next().is_some()
    }

    /// Draws new noise from `rng` for every noisy layer (none without
    /// NoisyNets); the forward passes that follow use it.
    pub fn resample_noise(&self, rng: &mut impl Rng) {
        self.noisy_layers()
            .for_each(|layer| layer.resample_noise(rng));
    }

    /// The noisy layers compute with their means from now on.
    pub fn clear_noise(&self) {
        self.noisy_layers().for_each(NoisyLinear::clear_noise);
    }

    fn noisy_layers(&self) -> impl Iterator<Item = &NoisyLinear> {
        let layers = match &self.head {
            QHead::Plain(head) => [Some(head), None],
            QHead::Dueling { value, advantage } => [Some(value), Some(advantage)],
        };
        layers
            .into_iter()
            .flatten()
            .filter_map(|layer| match layer {
                HeadLayer::Noisy(noisy) => Some(noisy),
                HeadLayer::Linear(_) => None,
            })
    }

    pub fn num_actions(&self) -> i64 {
        self.num_actions
    }

    /// ε after `env_steps` sampled steps.
    pub fn epsilon(&self, env_steps: u64) -> f64 {
        self.epsilon.value_at(env_steps)
    }
}

impl RLModule for QNetwork {
    /// # Panics
    /// If `spec` is not a Q-network over a Discrete action space; the DQN
    /// config rejects any other space before a module is built.
    fn new(spec: &ModuleSpec, device: Device) -> Self {
        let ModuleKind::QNetwork {
            dueling,
            epsilon,
            distributional,
            noisy_sigma0,
        } = &spec.kind
        else {
            panic!("QNetwork built from a {:?} spec", spec.kind);
        };
        let ActionSpace::Discrete { n } = spec.action_space else {
            panic!("QNetwork needs a Discrete action space");
        };
        let var_store = nn::VarStore::new(device);
        let root = var_store.root();
        let encoder = Encoder::new(
            &root / "q",
            &spec.encoder().expect("module spec with a valid encoder"),
        );
        let width = encoder.output_dim();
        let n = n as i64;
        // One output per action, or per action and atom.
        let atoms = distributional.as_ref().map_or(1, |d| d.num_atoms as i64);
        let layer = |name: &str, outputs: i64| match noisy_sigma0 {
            None => HeadLayer::Linear(linear(&root / name, width, outputs, 1.0)),
            Some(sigma0) => {
                HeadLayer::Noisy(NoisyLinear::new(&root / name, width, outputs, *sigma0))
            }
        };
        let head = if *dueling {
            QHead::Dueling {
                value: layer("value_head", atoms),
                advantage: layer("advantage_head", n * atoms),
            }
        } else {
            QHead::Plain(layer("q_head", n * atoms))
        };
        let support = distributional
            .clone()
            .map(|support| (support.clone(), support.atoms(device)));
        QNetwork {
            var_store,
            encoder,
            head,
            epsilon: epsilon.clone(),
            num_actions: n,
            support,
            spec: spec.clone(),
        }
    }

    module_fields!();

    /// ε-greedy: a uniformly random action with probability ε, else the
    /// greedy one; `logp` is that action's probability under this rule.
    /// A noisy network instead acts greedily under noise drawn from `rng`
    /// for this step when exploring, and under its means when not.
    fn compute_actions(
        &self,
        obs: &Tensor,
        explore: bool,
        env_steps: u64,
        rng: &mut ChaCha8Rng,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        let noisy = self.is_noisy();
        if noisy && explore {
            self.resample_noise(rng);
        } else if noisy {
            self.clear_noise();
        }
        let greedy =
            Vec::<i64>::try_from(self.q_values(obs).argmax(-1, false)).expect("argmax gives int64");
        let epsilon = if explore && !noisy {
            self.epsilon(env_steps)
        } else {
            0.0
        };
        epsilon_greedy(
            greedy.iter().map(|&best| best as usize),
            epsilon,
            self.num_actions as usize,
            rng,
            actions,
            logp,
        );
    }

    fn host_policy(&self) -> Option<HostPolicy> {
        Some(HostPolicy::EpsilonGreedy {
            encoder: self.encoder.host_mlp()?,
            head: self.head.map(HostHeadLayer::of),
            epsilon: self.epsilon.clone(),
            atoms: self
                .support
                .as_ref()
                .map(|(_, atoms)| crate::to_host(atoms)),
        })
    }
}

/// ε-greedy over `n` actions given each row's greedy action: uniformly
/// random with probability ε, else the greedy one; `logp` is the chosen
/// action's probability under this rule. Shared with the host forward pass
/// ([`super::HostPolicy`]), so both draw the same actions from the same RNG.
pub(crate) fn epsilon_greedy(
    greedy: impl IntoIterator<Item = usize>,
    epsilon: f64,
    n: usize,
    rng: &mut ChaCha8Rng,
    actions: &mut [f32],
    logp: &mut [f32],
) {
    let epsilon = epsilon as f32;
    for ((action, logp), best) in actions.iter_mut().zip(logp).zip(greedy) {
        let chosen = if rng.gen::<f32>() < epsilon {
            rng.gen_range(0..n)
        } else {
            best
        };
        let greedy_part = if chosen == best { 1.0 - epsilon } else { 0.0 };
        *action = chosen as f32;
        *logp = (epsilon / n as f32 + greedy_part).ln();
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::rl_module::ModelConfig;

    fn network(dueling: bool) -> QNetwork {
        distributional_network(dueling, None)
    }

    fn distributional_network(dueling: bool, distributional: Option<ValueSupport>) -> QNetwork {
        build(dueling, distributional, None)
    }

    fn build(
        dueling: bool,
        distributional: Option<ValueSupport>,
        noisy_sigma0: Option<f64>,
    ) -> QNetwork {
        QNetwork::new(
            &ModuleSpec {
                observation_shape: vec![3],
                observation_dtype: Default::default(),
                action_space: ActionSpace::Discrete { n: 4 },
                model: ModelConfig::default(),
                kind: ModuleKind::QNetwork {
                    dueling,
                    epsilon: Schedule(vec![(0, 1.0), (100, 0.0)]),
                    distributional,
                    noisy_sigma0,
                },
            },
            Device::Cpu,
        )
    }

    /// ε = 1 at step 0 (uniform, every action seen, probability 1/4 each);
    /// ε = 0 from step 100 (always the argmax, probability 1).
    #[test]
    fn acts_epsilon_greedily_along_the_schedule() {
        let q = network(true);
        let obs = Tensor::randn([256, 3], (Kind::Float, Device::Cpu));
        let greedy = Vec::<i64>::try_from(q.q_values(&obs).argmax(-1, false)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (mut actions, mut logp) = (vec![0.0; 256], vec![0.0; 256]);
        q.compute_actions(&obs, true, 0, &mut rng, &mut actions, &mut logp);
        for a in 0..4 {
            assert!(actions.contains(&(a as f32)), "action {a} never drawn");
        }
        assert!(logp.iter().all(|&l| (l - 0.25f32.ln()).abs() < 1e-6));
        q.compute_actions(&obs, true, 100, &mut rng, &mut actions, &mut logp);
        let chosen: Vec<i64> = actions.iter().map(|&a| a as i64).collect();
        assert_eq!(chosen, greedy);
        assert!(logp.iter().all(|&l| l == 0.0));
    }

    /// The dueling head's Q-values average to V(s) over the actions.
    #[test]
    fn dueling_q_values_average_to_the_state_value() {
        let q = network(true);
        let obs = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let QHead::Dueling { value, .. } = &q.head else {
            panic!("dueling head expected");
        };
        let v = value.forward(&q.encoder.forward(&obs)).squeeze_dim(-1);
        let mean_q = q.q_values(&obs).mean_dim(-1, false, Kind::Float);
        assert!(mean_q.allclose(&v, 1e-5, 1e-6, false));
    }

    /// C51: each action's Q-value is the mean of its distribution over the
    /// atoms, plain or dueling, and the host pass (which has no such head)
    /// leaves acting to libtorch.
    #[test]
    fn a_distributional_network_acts_on_the_mean_of_each_actions_returns() {
        let support = ValueSupport {
            num_atoms: 5,
            v_min: -2.0,
            v_max: 2.0,
        };
        assert_eq!(support.spacing(), 1.0);
        for dueling in [false, true] {
            let q = distributional_network(dueling, Some(support.clone()));
            let obs = Tensor::randn([6, 3], (Kind::Float, Device::Cpu));
            let logits = q.atom_logits(&obs);
            assert_eq!(logits.size(), [6, 4, 5]);
            let p = Vec::<f32>::try_from(logits.softmax(-1, Kind::Float).view(-1)).unwrap();
            let q_values = Vec::<f32>::try_from(q.q_values(&obs).view(-1)).unwrap();
            for (probabilities, q_value) in p.chunks(5).zip(&q_values) {
                let mean: f32 = probabilities
                    .iter()
                    .zip([-2.0, -1.0, 0.0, 1.0, 2.0])
                    .map(|(p, z)| p * z)
                    .sum();
                assert!((mean - q_value).abs() < 1e-5, "dueling {dueling}");
            }
        }
    }

    /// NoisyNets: ε (1 at step 0 here) is not used; exploring acts greedily
    /// under fresh noise each call (probability 1 for the chosen action,
    /// other actions than the noise-free greedy ones, drawn reproducibly
    /// from the RNG), and not exploring acts on the means.
    #[test]
    fn a_noisy_network_explores_by_its_noise_instead_of_epsilon() {
        for dueling in [false, true] {
            let q = build(dueling, None, Some(4.0));
            assert!(q.is_noisy() && !network(dueling).is_noisy());
            let obs = Tensor::randn([64, 3], (Kind::Float, Device::Cpu));
            q.clear_noise();
            let mean_greedy: Vec<f32> = Vec::<i64>::try_from(q.q_values(&obs).argmax(-1, false))
                .unwrap()
                .into_iter()
                .map(|a| a as f32)
                .collect();
            let act = |explore: bool, seed: u64| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let (mut actions, mut logp) = (vec![0.0; 64], vec![1.0; 64]);
                q.compute_actions(&obs, explore, 0, &mut rng, &mut actions, &mut logp);
                assert!(logp.iter().all(|&l| l == 0.0), "greedy under the noise");
                actions
            };
            assert_eq!(act(false, 1), mean_greedy);
            let explored = act(true, 1);
            assert_ne!(explored, mean_greedy, "dueling {dueling}");
            assert_ne!(explored, act(true, 2));
            assert_eq!(explored, act(true, 1));
            assert_eq!(act(false, 1), mean_greedy);
        }
    }
}
