#!/usr/bin/env python3
"""Reference trajectories from Gymnasium for oxray's parity tests.

For each classic-control env, starts episodes from chosen physical states
(reset states for several seeds, plus hand-picked edge states), drives them
with random and with closed-loop policies until Gymnasium's registered
TimeLimit or termination ends them, and records the actions and every step.
`oxray envs replay` (and the library) must reproduce the steps from the same
state and actions. Writes a JSON list of cases to the path given.
"""
import json
import sys

import gymnasium as gym
import numpy as np


def cartpole_policy(rng, kind):
    if kind == "random":
        return lambda s: int(rng.integers(2))
    # A linear controller that balances for the full 500 steps, with a little
    # noise so that episodes differ.
    return lambda s: int(s[2] + 0.3 * s[3] + 0.02 * s[0] + 0.1 * s[1] + rng.normal(0, 0.02) > 0)


def mountain_car_policy(rng, kind):
    if kind == "random":
        return lambda s: int(rng.integers(3))
    return lambda s: 2 if s[1] > 0 or (s[1] == 0 and rng.random() < 0.5) else 0


def continuous_mountain_car_policy(rng, kind):
    if kind == "random":
        # Outside [-1, 1] on purpose: Gymnasium clips the force, not the reward.
        return lambda s: np.array([rng.uniform(-1.5, 1.5)], dtype=np.float32)
    return lambda s: np.array([np.sign(s[1] or 1.0) * rng.uniform(0.6, 1.3)], dtype=np.float32)


def pendulum_policy(rng, kind):
    if kind == "random":
        return lambda s: np.array([rng.uniform(-3.0, 3.0)], dtype=np.float32)
    return lambda s: np.array([np.sign(s[1] or 1.0) * 2.0 + rng.normal(0, 0.3)], dtype=np.float32)


def acrobot_policy(rng, kind):
    if kind == "random":
        return lambda s: int(rng.integers(3))
    return lambda s: 2 if s[3] + 0.2 * rng.normal() > 0 else 0


POLICIES = {
    "CartPole-v1": cartpole_policy,
    "MountainCar-v0": mountain_car_policy,
    "MountainCarContinuous-v0": continuous_mountain_car_policy,
    "Pendulum-v1": pendulum_policy,
    "Acrobot-v1": acrobot_policy,
}

EDGE_STATES = {
    "CartPole-v1": [[2.3, 0.5, 0.0, 0.0], [0.0, 0.0, 0.2, 0.5]],
    "MountainCar-v0": [[-1.19, -0.07], [0.48, 0.03]],
    "MountainCarContinuous-v0": [[-1.19, -0.07], [0.44, 0.02], [-0.5, 0.0]],
    "Pendulum-v1": [[0.0, 0.0], [12.0, -7.9], [-3.1, 8.0]],
    "Acrobot-v1": [[3.0, -3.0, 12.0, -28.0], [0.0, 0.0, 0.0, 0.0]],
}


def physical_state(env):
    return [float(x) for x in np.asarray(env.unwrapped.state, dtype=np.float64)]


def json_action(action):
    return [float(x) for x in action] if isinstance(action, np.ndarray) else int(action)


def run_case(env_id, start, kind, seed):
    env = gym.make(env_id)
    env.reset(seed=0)
    env.unwrapped.state = np.array(start, dtype=np.float64)
    policy = POLICIES[env_id](np.random.default_rng(seed), kind)
    state = start
    actions, steps = [], []
    while True:
        action = policy(state)
        obs, reward, terminated, truncated, _ = env.step(action)
        actions.append(json_action(action))
        steps.append({
            "obs": [float(x) for x in obs],
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        })
        state = physical_state(env)
        if terminated or truncated:
            break
    return {"env_id": env_id, "policy": kind, "seed": seed, "state": start, "actions": actions, "steps": steps}


def main():
    cases = []
    for env_id in POLICIES:
        starts = []
        for seed in range(20):
            env = gym.make(env_id)
            env.reset(seed=seed)
            starts.append(physical_state(env))
        starts += EDGE_STATES[env_id]
        for index, start in enumerate(starts):
            for kind in ("random", "controller"):
                cases.append(run_case(env_id, start, kind, seed=100 * index + len(cases)))
    with open(sys.argv[1], "w") as out:
        json.dump(cases, out)


if __name__ == "__main__":
    main()
