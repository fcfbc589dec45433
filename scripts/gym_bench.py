#!/usr/bin/env python3
"""Gymnasium's step rate for one env id: a single env and a SyncVectorEnv.

Sampled actions for the single env and a fixed action pattern for the vector
env (so action sampling does not count against Gymnasium), for any registered id. Prints one JSON object: {"single": steps/s, "vector": steps/s}.
Used by `oxray envs bench --compare-gymnasium` so both sides run in the same run.
"""
import argparse
import json
import time

import gymnasium as gym
import numpy as np


def single_rate(env_id: str, steps: int) -> float:
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_rate(env_id: str, num_envs: int, iterations: int) -> float:
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)])
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(64)]
    start = time.perf_counter()
    for i in range(iterations):
        envs.step(actions[i % len(actions)])
    return num_envs * iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args()
    np.random.seed(0)
    print(json.dumps({
        "single": single_rate(args.env, args.steps),
        "vector": vector_rate(args.env, args.num_envs, max(1, args.steps // args.num_envs)),
    }))


if __name__ == "__main__":
    main()
