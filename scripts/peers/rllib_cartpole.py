#!/usr/bin/env python3
"""RLlib 2.60 (new API stack) on CartPole-v1 with settings like RLlib's own
tuned examples, for scripts/bench-vs-peers.sh.

    rllib_cartpole.py ppo SEED    tuned_examples/ppo/cartpole_ppo.py
    rllib_cartpole.py dqn SEED    tuned_examples/dqn/cartpole_dqn.py
    rllib_cartpole.py appo SEED   tuned_examples/appo/cartpole_appo.py
    rllib_cartpole.py impala SEED tuned_examples/impala/cartpole_impala.py
    rllib_cartpole.py sac SEED    tuned_examples/sac/pendulum_sac.py (Pendulum-v1)

These are RLlib's hyperparameters, not oxray's peer configs': the comparison
is wall time to the same target on the same task. PPO and DQN sample with
1 EnvRunner and learn in the driver (Ray gets 2 CPUs), APPO and IMPALA
sample with 2 EnvRunners (Ray gets 4 logical CPUs, which their actors need
to start).

After every training iteration it prints `episode return=R steps=S` for each
episode finished in it (S: env steps sampled by the iteration's end) and
stops once the mean of the last 100 returns (5 for SAC, the example's own
`metrics_num_episodes_for_smoothing`) reaches the target, or at the step
limit. The returns come from an `on_episode_end` callback rather than
RLlib's `episode_return_mean`, which here is not a mean over the last 100
episodes (it went from 325 to 500 within one 1000-step DQN iteration).
"""
import os
import sys
from collections import deque

import torch

# scripts/bench-vs-peers.sh's BENCH_THREADS, passed as OMP_NUM_THREADS.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

import ray  # noqa: E402
from ray.rllib.algorithms.appo import APPOConfig  # noqa: E402
from ray.rllib.algorithms.dqn import DQNConfig  # noqa: E402
from ray.rllib.algorithms.impala import IMPALAConfig  # noqa: E402
from ray.rllib.algorithms.ppo import PPOConfig  # noqa: E402
from ray.rllib.algorithms.sac import SACConfig  # noqa: E402
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig  # noqa: E402

RETURNS = "bench_episode_returns"


def log_return(*, episode, prev_episode_chunks, metrics_logger, **kwargs):
    """Each finished episode's return (its earlier chunks included), listed
    per iteration under env_runners/RETURNS."""
    ret = episode.get_return() + sum(chunk.get_return() for chunk in prev_episode_chunks)
    metrics_logger.log_value(RETURNS, ret, reduce="item_series")


# ALGO: (env, target, episodes averaged, step limit)
TASKS = {
    "ppo": ("CartPole-v1", 475.0, 100, 500_000),
    "dqn": ("CartPole-v1", 450.0, 100, 200_000),
    "appo": ("CartPole-v1", 450.0, 100, 2_000_000),
    "impala": ("CartPole-v1", 450.0, 100, 2_000_000),
    "sac": ("Pendulum-v1", -250.0, 5, 20_000),
}


def config(algo, seed):
    if algo == "ppo":
        cfg = (
            PPOConfig()
            .env_runners(num_env_runners=1)
            .training(lr=3e-4, num_epochs=6, vf_loss_coeff=0.01)
            .rl_module(model_config=DefaultModelConfig(
                fcnet_hiddens=[32], fcnet_activation="linear", vf_share_layers=True))
        )
    elif algo == "dqn":
        cfg = (
            DQNConfig()
            .env_runners(num_env_runners=1)
            .training(
                lr=5e-4, train_batch_size_per_learner=32, n_step=(2, 5),
                double_q=True, dueling=True, epsilon=[(0, 1.0), (10000, 0.02)],
                replay_buffer_config={
                    "type": "PrioritizedEpisodeReplayBuffer",
                    "capacity": 50000, "alpha": 0.6, "beta": 0.4,
                },
            )
            .rl_module(model_config=DefaultModelConfig(
                fcnet_hiddens=[256], fcnet_activation="tanh", fcnet_bias_initializer="zeros_",
                head_fcnet_hiddens=[256], head_fcnet_activation="tanh",
                head_fcnet_bias_initializer="zeros_"))
        )
    elif algo == "sac":
        cfg = (
            SACConfig()
            .training(
                initial_alpha=1.001, actor_lr=2e-4, critic_lr=8e-4, alpha_lr=9e-4, lr=None,
                target_entropy="auto", n_step=(2, 5), tau=0.005,
                train_batch_size_per_learner=256, target_network_update_freq=1,
                replay_buffer_config={
                    "type": "PrioritizedEpisodeReplayBuffer",
                    "capacity": 100000, "alpha": 1.0, "beta": 0.0,
                },
                num_steps_sampled_before_learning_starts=256,
            )
            .rl_module(model_config=DefaultModelConfig(
                fcnet_hiddens=[256, 256], fcnet_activation="relu",
                fcnet_kernel_initializer=torch.nn.init.xavier_uniform_,
                head_fcnet_hiddens=[], head_fcnet_activation=None,
                head_fcnet_kernel_initializer="orthogonal_",
                head_fcnet_kernel_initializer_kwargs={"gain": 0.01}))
            .reporting(metrics_num_episodes_for_smoothing=5)
        )
    elif algo == "impala":
        cfg = (
            IMPALAConfig()
            .env_runners(num_env_runners=2)
            .training(
                train_batch_size_per_learner=500, grad_clip=40.0, grad_clip_by="global_norm",
                lr=5e-4, vf_loss_coeff=0.05, entropy_coeff=0.0)
            .rl_module(model_config=DefaultModelConfig(vf_share_layers=True))
        )
    else:
        cfg = (
            APPOConfig()
            .env_runners(num_env_runners=2)
            .training(circular_buffer_iterations_per_batch=2, vf_loss_coeff=0.05, entropy_coeff=0.0)
            .rl_module(model_config=DefaultModelConfig(vf_share_layers=True))
        )
    env = TASKS[algo][0]
    return cfg.environment(env).debugging(seed=seed).callbacks(on_episode_end=log_return)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TASKS)}}} SEED")
    algo, seed = sys.argv[1], int(sys.argv[2])
    _, target, window_len, limit = TASKS[algo]
    # APPO's and IMPALA's 2 EnvRunners plus their Learner-side actors wait
    # forever for resources with 2 logical CPUs; the cores stay 2 either way.
    ray.init(num_cpus=4 if algo in ("appo", "impala") else 2, include_dashboard=False, log_to_driver=False)
    try:
        trainer = config(algo, seed).build_algo()
        window = deque(maxlen=window_len)
        while True:
            result = trainer.train()
            steps = int(result["num_env_steps_sampled_lifetime"])
            returns = result["env_runners"].get(RETURNS, [])
            for ret in returns if isinstance(returns, list) else []:
                window.append(float(ret))
                print(f"episode return={float(ret):.2f} steps={steps}", flush=True)
            full = len(window) == window_len
            if full and sum(window) / window_len >= target or steps >= limit:
                break
        trainer.stop()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
