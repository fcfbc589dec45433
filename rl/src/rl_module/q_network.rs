//! The Q-network module (DQN): Q(s, ·) for a Discrete action space from one
//! encoder, either one linear head or the dueling head of Wang et al. 2016,
//! Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a'), which learns the state's value
//! apart from the actions' differences. It acts ε-greedily with ε following
//! an [`EpsilonSchedule`] over the run's env steps.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::{
    linear, ActionSpace, DenseLayer, Encoder, HostPolicy, ModuleKind, ModuleSpec, QHead, RLModule,
};
use crate::schedule::Schedule;

/// ε over env steps (RLlib's `epsilon: [[0, 1.0], [10000, 0.05]]`).
pub type EpsilonSchedule = Schedule;

pub struct QNetwork {
    var_store: nn::VarStore,
    encoder: Encoder,
    head: QHead<nn::Linear>,
    epsilon: EpsilonSchedule,
    num_actions: i64,
    spec: ModuleSpec,
}

impl QNetwork {
    /// Q(s, a) for every action, `[B, num_actions]`.
    pub fn q_values(&self, obs: &Tensor) -> Tensor {
        let features = self.encoder.forward(obs);
        match &self.head {
            QHead::Plain(head) => head.forward(&features),
            QHead::Dueling { value, advantage } => {
                let advantages = advantage.forward(&features);
                value.forward(&features) + &advantages - advantages.mean_dim(-1, true, Kind::Float)
            }
        }
    }

    /// The encoder and the head's layers, for the host training pass
    /// ([`super::HostQNetwork`]).
    pub(crate) fn parts(&self) -> (&Encoder, &QHead<nn::Linear>) {
        (&self.encoder, &self.head)
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
        let ModuleKind::QNetwork { dueling, epsilon } = &spec.kind else {
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
        let head = if *dueling {
            QHead::Dueling {
                value: linear(&root / "value_head", width, 1, 1.0),
                advantage: linear(&root / "advantage_head", width, n, 1.0),
            }
        } else {
            QHead::Plain(linear(&root / "q_head", width, n, 1.0))
        };
        QNetwork {
            var_store,
            encoder,
            head,
            epsilon: epsilon.clone(),
            num_actions: n,
            spec: spec.clone(),
        }
    }

    fn spec(&self) -> &ModuleSpec {
        &self.spec
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.var_store
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.var_store
    }

    /// ε-greedy: a uniformly random action with probability ε, else the
    /// greedy one; `logp` is that action's probability under this rule.
    fn compute_actions(
        &self,
        obs: &Tensor,
        explore: bool,
        env_steps: u64,
        rng: &mut ChaCha8Rng,
        actions: &mut [f32],
        logp: &mut [f32],
    ) {
        let greedy =
            Vec::<i64>::try_from(self.q_values(obs).argmax(-1, false)).expect("argmax gives int64");
        let epsilon = if explore {
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
            head: self.head.try_map(|layer| Some(DenseLayer::of(layer)))?,
            epsilon: self.epsilon.clone(),
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
        QNetwork::new(
            &ModuleSpec {
                observation_shape: vec![3],
                observation_dtype: Default::default(),
                action_space: ActionSpace::Discrete { n: 4 },
                model: ModelConfig::default(),
                kind: ModuleKind::QNetwork {
                    dueling,
                    epsilon: Schedule(vec![(0, 1.0), (100, 0.0)]),
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
}
