#!/usr/bin/env python3
"""Stable-Baselines3 on CartPole-v1 with the settings of oxray's peer configs,
for scripts/bench-vs-peers.sh.

    sb3_cartpole.py ppo SEED   CleanRL ppo.py's defaults
                               (configs/peers/ppo-cleanrl-cartpole.yaml)
    sb3_cartpole.py dqn SEED   rl-baselines3-zoo's DQN CartPole-v1 settings
                               (configs/peers/dqn-sb3-cartpole.yaml)
    sb3_cartpole.py sac SEED   rl-baselines3-zoo's SAC Pendulum-v1 settings
                               (configs/sac-pendulum.yaml has them, but 64x64
                               networks where the zoo has 256x256)

Prints `episode return=R steps=S` for every finished episode (S: env steps
sampled so far) and stops at the target (mean of the last 100 returns; 5 for
SAC, as in RLlib's tuned Pendulum example) or the step limit, the same stop
as the oxray config's.
"""
import os
import sys
from collections import deque

import torch

# scripts/bench-vs-peers.sh's BENCH_THREADS, passed as OMP_NUM_THREADS.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

from stable_baselines3 import DQN, PPO, SAC  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

# ALGO: (env, target, episodes averaged, step limit)
TASKS = {
    "ppo": ("CartPole-v1", 475.0, 100, 500_000),
    "dqn": ("CartPole-v1", 450.0, 100, 100_000),
    "sac": ("Pendulum-v1", -250.0, 5, 20_000),
}


class PrintEpisodes(BaseCallback):
    """Prints each finished episode's return; stops once the mean of the
    window reaches the target."""

    def __init__(self, target, window):
        super().__init__()
        self.target = target
        self.window = deque(maxlen=window)

    def _on_step(self):
        for info in self.locals["infos"]:
            if "episode" in info:
                self.window.append(info["episode"]["r"])
                print(f"episode return={info['episode']['r']:.2f} steps={self.num_timesteps}", flush=True)
        full = len(self.window) == self.window.maxlen
        return not (full and sum(self.window) / len(self.window) >= self.target)


def build(algo, env_id, seed, limit):
    if algo == "ppo":
        env = make_vec_env(env_id, n_envs=4, seed=seed)
        return PPO(
            "MlpPolicy", env, seed=seed, device="cpu",
            learning_rate=lambda remaining: 2.5e-4 * remaining,  # linear to 0 over `limit`
            n_steps=128, batch_size=128, n_epochs=4, gamma=0.99, gae_lambda=0.95,
            clip_range=0.2, clip_range_vf=None, normalize_advantage=True,
            # CleanRL: vf_coef 0.5 × ½·MSE; SB3's value loss is the plain MSE.
            ent_coef=0.01, vf_coef=0.25, max_grad_norm=0.5,
            policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh),
        )
    if algo == "dqn":
        env = make_vec_env(env_id, n_envs=1, seed=seed)
        return DQN(
            "MlpPolicy", env, seed=seed, device="cpu",
            learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
            gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
            # The zoo's 0.16 of 50k steps: ε reaches 0.04 after 8k steps.
            exploration_fraction=8000 / limit, exploration_final_eps=0.04,
            policy_kwargs=dict(net_arch=[256, 256]),
        )
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    return SAC(
        "MlpPolicy", env, seed=seed, device="cpu",
        learning_rate=1e-3, batch_size=256, buffer_size=100_000, learning_starts=100,
        gamma=0.99, tau=0.005, train_freq=1, gradient_steps=1, ent_coef="auto",
        policy_kwargs=dict(net_arch=[256, 256]),
    )


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TASKS)}}} SEED")
    algo, seed = sys.argv[1], int(sys.argv[2])
    env_id, target, window, limit = TASKS[algo]
    model = build(algo, env_id, seed, limit)
    model.learn(total_timesteps=limit, callback=PrintEpisodes(target, window))
    print(f"done steps={model.num_timesteps}", flush=True)


if __name__ == "__main__":
    main()
