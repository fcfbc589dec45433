"""The Python half of oxray's Gymnasium bridge.

Loaded by oxray-gym into the interpreter it embeds. Builds Gymnasium vector
envs from an oxray env config, steps them with numpy action batches, and hands
back observations as one contiguous float32 array of shape (num_envs, flatdim)
laid out as `gymnasium.spaces.flatten` lays them out, so the Rust side copies
each step's observations once and never touches Python objects per element.
"""
import functools
import importlib
import json
import sys
import threading

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

# Registering modules for id prefixes Gymnasium does not import by itself.
NAMESPACE_MODULES = {"ALE/": "ale_py", "MiniGrid-": "minigrid", "BabyAI-": "minigrid"}

# One env is made at a time per process. Making one imports its module
# (Gymnasium imports entry points lazily), and two threads importing the
# same package at once can each see it half-initialised: one fails with a
# circular-import error and takes the module out of sys.modules, and the
# other then fails with a KeyError. Waiting on the lock releases the GIL.
_MAKING = threading.Lock()


def _entry_point(env_id):
    """The class or factory named by a `module:Class` id, else None."""
    if ":" not in env_id:
        for prefix, module in NAMESPACE_MODULES.items():
            if env_id.startswith(prefix):
                importlib.import_module(module)
        return None
    module_name, attr = env_id.split(":", 1)
    module = importlib.import_module(module_name)
    target = getattr(module, attr, None)
    # Gymnasium's own `module:EnvId` form: importing registered the id.
    return target if callable(target) else None


def _uses_mujoco(name):
    """Whether Gymnasium's registered `name` is one of its MuJoCo envs."""
    try:
        entry_point = gym.spec(name).entry_point
    except Exception:  # gym.make reports an unknown id better
        return False
    return "mujoco" in str(getattr(entry_point, "__module__", entry_point))


@functools.cache
def _route_mujoco_warnings():
    """MuJoCo appends its warnings (e.g. Gymnasium's models using a
    deprecated attribute) to MUJOCO_LOG.TXT in the working directory, which
    would leave that file wherever a worker runs; they go to stderr, the
    worker's log, instead, each message once per process."""
    import mujoco

    seen = set()

    def warn(message):
        if message not in seen:
            seen.add(message)
            print(f"MuJoCo warning: {message}", file=sys.stderr, flush=True)

    mujoco.set_mju_user_warning(warn)


def make_env(env_id, kwargs, max_episode_steps, wrappers):
    """One sub-env: constructed, time-limited and wrapped."""
    entry_point = _entry_point(env_id)
    if entry_point is not None:
        env = entry_point(**kwargs)
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
    else:
        limit = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        name = env_id.split(":", 1)[1] if ":" in env_id else env_id
        if _uses_mujoco(name):
            _route_mujoco_warnings()
        env = gym.make(name, **limit, **kwargs)
    for class_name, args in wrappers:
        env = _wrapper_class(class_name)(env, **args)
    return env


def _wrapper_class(name):
    """Gymnasium's wrapper class `name`, or the class a `module:Class`
    name imports."""
    if ":" not in name:
        return getattr(gym.wrappers, name)
    module_name, class_name = name.split(":", 1)
    return getattr(importlib.import_module(module_name), class_name)


def _bounds(array):
    """Box bounds for JSON, which has no infinities: those become strings."""
    return [x if np.isfinite(x) else ("inf" if x > 0 else "-inf")
            for x in array.astype(np.float64).ravel().tolist()]


def describe_space(space):
    """A space as oxray's JSON form."""
    if isinstance(space, gym.spaces.Box):
        return {"Box": {"low": _bounds(space.low), "high": _bounds(space.high),
                        "shape": list(space.shape), "dtype": str(space.dtype)}}
    if isinstance(space, gym.spaces.Discrete):
        return {"Discrete": {"n": int(space.n), "start": int(space.start)}}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"MultiDiscrete": {"nvec": [int(n) for n in space.nvec.ravel()]}}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"MultiBinary": {"n": int(np.prod(space.shape))}}
    if isinstance(space, gym.spaces.Tuple):
        return {"Tuple": [describe_space(s) for s in space.spaces]}
    if isinstance(space, gym.spaces.Dict):
        return {"Dict": {k: _describe_entry(k, s) for k, s in space.spaces.items()}}
    raise TypeError(
        f"space {space} has no flat form for a model (Box, Discrete, MultiDiscrete, "
        "MultiBinary, Tuple and Dict do); drop it with a wrapper such as filter_observation")


def _describe_entry(key, space):
    """A Dict space's entry, its key named if it has no flat form."""
    try:
        return describe_space(space)
    except TypeError as error:
        raise TypeError(f"Dict key {key!r}: {error}") from None


def _one_hot(values, n, start):
    return np.eye(n, dtype=np.float32)[np.asarray(values, dtype=np.int64) - start]


def flatten_batch(space, obs, num_envs):
    """Batched observations as float32 rows, gymnasium.spaces.flatten's layout."""
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        return np.asarray(obs).reshape(num_envs, -1)
    if isinstance(space, gym.spaces.Discrete):
        return _one_hot(obs, int(space.n), int(space.start))
    if isinstance(space, gym.spaces.MultiDiscrete):
        columns = np.asarray(obs).reshape(num_envs, -1)
        return np.concatenate([_one_hot(columns[:, i], int(n), 0)
                               for i, n in enumerate(space.nvec.ravel())], axis=1)
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate([flatten_batch(s, o, num_envs)
                               for s, o in zip(space.spaces, obs)], axis=1, dtype=np.float32)
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([flatten_batch(s, obs[k], num_envs)
                               for k, s in space.spaces.items()], axis=1, dtype=np.float32)
    raise TypeError(f"space {space} has no flat form for a model")


class VectorBridge:
    """`num_envs` sub-envs in a SyncVectorEnv, with flat float32 observations."""

    def __init__(self, env_id, kwargs_json, max_episode_steps, wrappers_json, num_envs,
                 same_step):
        wrappers = json.loads(wrappers_json)
        make = functools.partial(make_env, env_id, json.loads(kwargs_json), max_episode_steps,
                                 wrappers)
        mode = AutoresetMode.SAME_STEP if same_step else AutoresetMode.NEXT_STEP
        with _MAKING:
            self.env = SyncVectorEnv([make] * num_envs, autoreset_mode=mode)
        self.num_envs = num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        # Names a part with no flat form (MiniGrid's `mission` Text) before
        # gymnasium's flatdim raises a bare NotImplementedError for it.
        describe_space(self.observation_space)
        self.flatdim = gym.spaces.flatdim(self.observation_space)
        self.action_shape = (num_envs,) + tuple(self.action_space.shape or ())

    def spaces(self):
        return json.dumps([describe_space(self.observation_space),
                           describe_space(self.action_space)])

    def _flat(self, obs):
        return np.ascontiguousarray(flatten_batch(self.observation_space, obs, self.num_envs),
                                    dtype=np.float32)

    def reset(self, seed):
        obs, _ = self.env.reset(seed=seed)
        return self._flat(obs)

    def step(self, actions):
        if isinstance(self.action_space, gym.spaces.Box):
            actions = actions.reshape(self.action_shape)
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        final = None
        mask = infos.get("_final_obs")
        if mask is not None and mask.any():
            final = np.zeros((self.num_envs, self.flatdim), dtype=np.float32)
            for i in np.flatnonzero(mask):
                final[i] = gym.spaces.flatten(self.observation_space, infos["final_obs"][i])
        return (self._flat(obs), np.asarray(rewards, dtype=np.float64),
                np.asarray(terminated, dtype=np.bool_), np.asarray(truncated, dtype=np.bool_),
                final)

    def set_state(self, index, state):
        env = self.env.envs[index].unwrapped
        if not hasattr(env, "state"):
            raise AttributeError(f"{type(env).__name__} has no `state` attribute to set")
        env.state = np.asarray(state, dtype=np.float64)

    def close(self):
        self.env.close()
