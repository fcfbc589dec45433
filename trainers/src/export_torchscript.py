"""Writes an oxray policy (actor-critic or Q-network over an MLP or a CNN, or
SAC's squashed Gaussian or categorical policy with its twin Q, and IQL's
with its state-value function too) as a TorchScript module.

Run by `oxray export --format torchscript` with the venv's Python (which has
torch): `python export_torchscript.py SPEC.json WEIGHTS.npz OUT.pt`. SPEC
describes the network as oxray built it (its kind, layer sizes or
convolutions, activation, shared trunk or dueling head, action space); WEIGHTS holds its parameters
under PyTorch-style names (`pi.0.weight`, `pi_head.bias`, `log_std`;
`q.0.weight`, `q_head.bias` or `value_head`/`advantage_head`, NoisyNets'
`q_head.mu_weight`, `q_head.sigma_bias`;
`qf.encoder.0.weight`, `qf_twin.head.bias`, `log_alpha`, IQL's
`vf.0.weight`, `vf_head.bias`). The module
mirrors oxray's forward pass exactly and is scripted (not traced), so `act`
keeps its deterministic/stochastic branch.
"""
import json
import sys
from typing import List

import numpy as np
import torch
from torch import nn


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "tanh":
        return torch.tanh(x)
    if activation == "relu":
        return torch.relu(x)
    return x


class Dense(nn.Linear):
    """A linear layer followed by the trunk's activation, so a trunk is a
    plain Sequential whose parameters are named `pi.0.weight`, `pi.1.weight`
    as oxray names them."""

    def __init__(self, inputs: int, outputs: int, activation: str):
        super().__init__(inputs, outputs)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(nn.functional.linear(x, self.weight, self.bias), self.activation)


class Conv(nn.Conv2d):
    """One convolution of a CNN trunk: zero padding (TensorFlow's "same",
    odd pixel last; none for the last, "valid" layer), the convolution,
    the trunk's activation, so its parameters are named `pi.0.weight`."""

    def __init__(self, in_channels: int, layer, activation: str):
        super().__init__(in_channels, layer["out_channels"], layer["kernel"],
                         stride=layer["stride"])
        self.pad: List[int] = layer["padding"]
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.conv2d(nn.functional.pad(x, self.pad), self.weight, self.bias,
                                 self.stride)
        return activate(x, self.activation)


class ConvTrunk(nn.Sequential):
    """The CNN encoder oxray builds for image observations: frames as
    Gymnasium gives them (`[B, H, W, C]` images or `[B, frames, H, W]`
    stacks, bytes or floats, or flattened rows), bytes scaled to [0, 1],
    through the convolutions, flattened."""

    def __init__(self, cnn):
        height, width, channels = cnn["image"]
        widths = [channels] + [layer["out_channels"] for layer in cnn["layers"]]
        super().__init__(*(Conv(c, layer, cnn["activation"])
                           for c, layer in zip(widths, cnn["layers"])))
        self.height, self.width, self.channels = height, width, channels
        self.channels_last: bool = cnn["channels_last"]
        self.bytes: bool = cnn["bytes"]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(torch.float32)
        if self.bytes:
            x = x * (1.0 / 255.0)
        if self.channels_last:
            x = x.reshape(-1, self.height, self.width, self.channels).permute(0, 3, 1, 2)
        else:
            x = x.reshape(-1, self.channels, self.height, self.width)
        for layer in self:
            x = layer(x)
        return x.flatten(1)


def trunk(spec, extra_inputs: int = 0) -> nn.Sequential:
    """The encoder oxray builds: its CNN for images, else the MLP from
    `model.fcnet_hiddens` over the observation and `extra_inputs` more
    values (SAC's Q-functions read the action beside it)."""
    if spec["cnn"] is not None:
        return ConvTrunk(spec["cnn"])
    widths = [spec["obs_dim"] + extra_inputs] + spec["hiddens"]
    return nn.Sequential(*(Dense(a, b, spec["activation"])
                           for a, b in zip(widths, widths[1:])))


class Policy(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.discrete = "discrete" in spec["action"]
        self.shared = spec["vf_share_layers"]
        self.pi = trunk(spec)
        self.vf = nn.Sequential() if self.shared else trunk(spec)
        if self.discrete:
            outputs = spec["action"]["discrete"]
            low = high = [0.0]
        else:
            low, high = spec["action"]["box"]["low"], spec["action"]["box"]["high"]
            outputs = len(low)
        self.pi_head = nn.Linear(spec["features"], outputs)
        self.vf_head = nn.Linear(spec["features"], 1)
        if self.discrete:  # unused, but TorchScript compiles both branches
            self.register_buffer("log_std", torch.zeros(0))
        else:
            self.log_std = nn.Parameter(torch.zeros(outputs))
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Action distribution inputs: logits (Discrete) or mean and log std
        side by side (Box), as RLlib's models output them."""
        out = self.pi_head(self.pi(obs))
        if self.discrete:
            return out
        return torch.cat([out, self.log_std.expand_as(out)], dim=-1)

    @torch.jit.export
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.pi(obs) if self.shared else self.vf(obs)
        return self.vf_head(features).squeeze(-1)

    @torch.jit.export
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions for the env: the mode when deterministic (what
        `oxray evaluate` takes), else a sample; Box actions clipped to the
        action space as oxray's EnvRunner clips them."""
        inputs = self.forward(obs)
        if self.discrete:
            if deterministic:
                return torch.argmax(inputs, dim=-1)
            return torch.multinomial(torch.softmax(inputs, dim=-1), 1).squeeze(-1)
        mean, log_std = inputs.chunk(2, dim=-1)
        action = mean if deterministic else mean + torch.exp(log_std) * torch.randn_like(mean)
        return torch.max(torch.min(action, self.high), self.low)


class HeadLinear(nn.Linear):
    """A plain layer of a Q-network's head, taking the `noisy` flag its
    NoisyNets twin needs and ignoring it."""

    def forward(self, x: torch.Tensor, noisy: bool) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class NoisyLinear(nn.Module):
    """NoisyNets' layer as oxray's: y = (mu_w + sigma_w * eps_w) x + mu_b +
    sigma_b * eps_b with factorised noise eps_w = f(eps_out) f(eps_in)^T,
    eps_b = f(eps_out), f(x) = sgn(x) sqrt(|x|); the means alone when not
    noisy (as `oxray evaluate` acts)."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.mu_weight = nn.Parameter(torch.zeros(outputs, inputs))
        self.sigma_weight = nn.Parameter(torch.zeros(outputs, inputs))
        self.mu_bias = nn.Parameter(torch.zeros(outputs))
        self.sigma_bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, x: torch.Tensor, noisy: bool) -> torch.Tensor:
        if not noisy:
            return nn.functional.linear(x, self.mu_weight, self.mu_bias)
        eps_in = torch.randn(self.mu_weight.shape[1])
        eps_out = torch.randn(self.mu_weight.shape[0])
        eps_in = eps_in.sign() * eps_in.abs().sqrt()
        eps_out = eps_out.sign() * eps_out.abs().sqrt()
        weight = self.mu_weight + self.sigma_weight * torch.outer(eps_out, eps_in)
        return nn.functional.linear(x, weight, self.mu_bias + self.sigma_bias * eps_out)


def head_layer(spec, inputs: int, outputs: int) -> nn.Module:
    return NoisyLinear(inputs, outputs) if spec["noisy"] else HeadLinear(inputs, outputs)


class QPolicy(nn.Module):
    """DQN's Q-network: Q(s, ·) from the trunk through its head, the mean of
    each action's return distribution with C51 (`num_atoms` above 1)."""

    def __init__(self, spec):
        super().__init__()
        self.q = trunk(spec)
        self.width = spec["features"]
        self.num_actions = spec["num_actions"]
        self.num_atoms = spec["num_atoms"]
        self.epsilon = spec["epsilon"]
        self.noisy = spec["noisy"]
        self.register_buffer("atoms", torch.linspace(
            spec["v_min"], spec["v_max"], self.num_atoms, dtype=torch.float32))

    def head_outputs(self, features: torch.Tensor, noisy: bool) -> torch.Tensor:
        """The head's outputs per action and atom, `[B, num_actions, K]`,
        under new noise when `noisy`."""
        raise NotImplementedError

    def q_values(self, obs: torch.Tensor, noisy: bool) -> torch.Tensor:
        out = self.head_outputs(self.q(obs), noisy)
        if self.num_atoms == 1:
            return out.squeeze(-1)
        return (torch.softmax(out, dim=-1) * self.atoms).sum(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q(s, a) for every action, `[B, num_actions]` (NoisyNets: under
        the means)."""
        return self.q_values(obs, False)

    @torch.jit.export
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) = max_a Q(s, a)."""
        return self.forward(obs).amax(dim=-1)

    @torch.jit.export
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The greedy action (what `oxray evaluate` takes); else, as oxray's
        EnvRunner explores, the greedy one under new noise (NoisyNets) or an
        epsilon-greedy one at the schedule's final epsilon."""
        if not deterministic and self.noisy:
            return torch.argmax(self.q_values(obs, True), dim=-1)
        greedy = torch.argmax(self.forward(obs), dim=-1)
        if deterministic:
            return greedy
        explore = torch.rand(greedy.shape) < self.epsilon
        random = torch.randint(0, self.num_actions, greedy.shape)
        return torch.where(explore, random, greedy)


class PlainQ(QPolicy):
    def __init__(self, spec):
        super().__init__(spec)
        self.q_head = head_layer(spec, self.width, self.num_actions * self.num_atoms)

    def head_outputs(self, features: torch.Tensor, noisy: bool) -> torch.Tensor:
        return self.q_head(features, noisy).view(-1, self.num_actions, self.num_atoms)


class DuelingQ(QPolicy):
    """Q = V + A - mean(A), atom by atom."""

    def __init__(self, spec):
        super().__init__(spec)
        self.value_head = head_layer(spec, self.width, self.num_atoms)
        self.advantage_head = head_layer(spec, self.width, self.num_actions * self.num_atoms)

    def head_outputs(self, features: torch.Tensor, noisy: bool) -> torch.Tensor:
        advantages = self.advantage_head(features, noisy).view(-1, self.num_actions, self.num_atoms)
        return (self.value_head(features, noisy).unsqueeze(1) + advantages
                - advantages.mean(dim=1, keepdim=True))


class QFunction(nn.Module):
    """One of SAC's Q-functions: an encoder over the observation and
    `action_dim` more inputs (a Box action in (-1, 1)^d side by side; none
    for a Discrete space), and a head of `outputs` values (Q(s, a); Q(s, .)
    of every Discrete action)."""

    def __init__(self, spec, action_dim: int, outputs: int):
        super().__init__()
        self.encoder = trunk(spec, action_dim)
        if action_dim == 0:
            width = spec["features"]
        else:
            width = spec["hiddens"][-1] if spec["hiddens"] else spec["obs_dim"] + action_dim
        self.head = nn.Linear(width, outputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(inputs))


class SquashedGaussianPolicy(nn.Module):
    """SAC's policy: a Gaussian over u with log std clamped to [-20, 2],
    actions tanh(u) in (-1, 1)^d rescaled to the Box; the twin Q-functions
    and log alpha come along, as the checkpoint holds them."""

    def __init__(self, spec):
        super().__init__()
        low, high = spec["action"]["box"]["low"], spec["action"]["box"]["high"]
        self.action_dim = len(low)
        self.pi = trunk(spec)
        self.pi_head = nn.Linear(spec["features"], 2 * self.action_dim)
        self.qf = QFunction(spec, self.action_dim, 1)
        self.qf_twin = QFunction(spec, self.action_dim, 1)
        self.log_alpha = nn.Parameter(torch.zeros(1))
        low_t = torch.tensor(low, dtype=torch.float32)
        high_t = torch.tensor(high, dtype=torch.float32)
        self.register_buffer("center", (low_t + high_t) / 2)
        self.register_buffer("half_range", (high_t - low_t) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean and clamped log std of u side by side, as RLlib's
        models output a distribution's inputs."""
        mean, log_std = self.pi_head(self.pi(obs)).split(self.action_dim, dim=-1)
        return torch.cat([mean, log_std.clamp(-20.0, 2.0)], dim=-1)

    @torch.jit.export
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Env-scale actions: tanh of the mean when deterministic (what
        `oxray evaluate` takes), else of a sample."""
        mean, log_std = self.forward(obs).chunk(2, dim=-1)
        u = mean if deterministic else mean + torch.exp(log_std) * torch.randn_like(mean)
        return self.center + self.half_range * torch.tanh(u)

    @torch.jit.export
    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> List[torch.Tensor]:
        """[Q1(s, a), Q2(s, a)] for env-scale actions."""
        obs_actions = torch.cat([obs, (actions - self.center) / self.half_range], dim=-1)
        return [self.qf(obs_actions).squeeze(-1), self.qf_twin(obs_actions).squeeze(-1)]

    @torch.jit.export
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2) at the deterministic action."""
        q1, q2 = self.q_values(obs, self.act(obs, True))
        return torch.min(q1, q2)


class IqlPolicy(SquashedGaussianPolicy):
    """IQL's policy: SAC's squashed Gaussian with twin Q, and the
    state-value function V(s) IQL learns, which is its value."""

    def __init__(self, spec):
        super().__init__(spec)
        self.vf = trunk(spec)
        self.vf_head = nn.Linear(spec["features"], 1)

    @torch.jit.export
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s)."""
        return self.vf_head(self.vf(obs)).squeeze(-1)


class CategoricalSacPolicy(nn.Module):
    """SAC's policy for a Discrete space: logits over the n actions, and
    twin Q-functions giving Q(s, .) of every action; log alpha comes along,
    as the checkpoint holds it."""

    def __init__(self, spec):
        super().__init__()
        n = spec["action"]["discrete"]
        self.pi = trunk(spec)
        self.pi_head = nn.Linear(spec["features"], n)
        self.qf = QFunction(spec, 0, n)
        self.qf_twin = QFunction(spec, 0, n)
        self.log_alpha = nn.Parameter(torch.zeros(1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The logits, as RLlib's models output a distribution's inputs."""
        return self.pi_head(self.pi(obs))

    @torch.jit.export
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The most probable action when deterministic (what `oxray
        evaluate` takes), else a sample."""
        logits = self.forward(obs)
        if deterministic:
            return torch.argmax(logits, dim=-1)
        return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)

    @torch.jit.export
    def q_values(self, obs: torch.Tensor) -> List[torch.Tensor]:
        """[Q1(s, .), Q2(s, .)], one column per action."""
        return [self.qf(obs), self.qf_twin(obs)]

    @torch.jit.export
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2) of the deterministic action."""
        q1, q2 = self.q_values(obs)
        action = self.act(obs, True).unsqueeze(-1)
        return torch.min(q1.gather(1, action), q2.gather(1, action)).squeeze(-1)


def build(spec) -> nn.Module:
    if spec["kind"] == "q_network":
        return DuelingQ(spec) if spec["dueling"] else PlainQ(spec)
    if spec["kind"] == "soft_actor_critic":
        if "discrete" in spec["action"]:
            return CategoricalSacPolicy(spec)
        if spec["value_function"]:
            return IqlPolicy(spec)
        return SquashedGaussianPolicy(spec)
    return Policy(spec)


def main(spec_path, weights_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)
    policy = build(spec)
    weights = np.load(weights_path)
    state = {name: torch.from_numpy(weights[name]) for name in weights.files}
    # Buffers the policy derives from SPEC (action bounds, C51's atoms, a
    # Discrete policy's empty log std) rather than from the weights.
    for name, buffer in policy.named_buffers():
        state[name] = buffer
    policy.load_state_dict(state, strict=True)
    scripted = torch.jit.script(policy.eval())
    scripted.save(out_path)
    names: List[str] = [name for name, _ in scripted.named_parameters()]
    print(json.dumps(names))


if __name__ == "__main__":
    main(*sys.argv[1:4])
