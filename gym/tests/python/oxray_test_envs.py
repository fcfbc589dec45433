"""Small Gymnasium envs for oxray's bridge tests, importable as `module:Class`."""
import os

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Observes (last action sign, step/10); reward 1 per step; terminates every
    `episode_length` steps. Raises in step number `fail_at` of the process's
    first such env when `marker` (a file path) does not exist yet, creating it,
    so across restarts exactly one step raises."""

    def __init__(self, episode_length=10, fail_at=None, marker=None):
        self.observation_space = gym.spaces.Box(-1.0, 10.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episode_length, self.fail_at, self.marker = episode_length, fail_at, marker
        self.steps = 0
        self.lifetime_steps = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        self.lifetime_steps += 1
        if self.fail_at == self.lifetime_steps and not os.path.exists(self.marker or ""):
            if self.marker:
                open(self.marker, "w").close()
            raise RuntimeError(f"sensor failure at step {self.lifetime_steps}")
        obs = np.array([1.0 if action else -1.0, self.steps / 10.0], np.float32)
        return obs, 1.0, self.steps >= self.episode_length, False, {}


class DictEnv(gym.Env):
    """A Dict observation with a Discrete, a uint8 Box and a Tuple inside."""

    def __init__(self):
        self.observation_space = gym.spaces.Dict({
            "position": gym.spaces.Box(0, 255, (2, 2), np.uint8),
            "heading": gym.spaces.Discrete(4, start=1),
            "pair": gym.spaces.Tuple((gym.spaces.MultiBinary(3), gym.spaces.Discrete(2))),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.t = 0

    def _obs(self):
        return {
            "position": np.full((2, 2), self.t, np.uint8),
            "heading": 1 + self.t % 4,
            "pair": (np.array([1, 0, self.t % 2], np.int8), self.t % 2),
        }

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        assert action.shape == (2,), action.shape
        self.t += 1
        return self._obs(), float(action.sum()), False, self.t >= 5, {}
