"""A stand-in for ``ale-py``: a fake ``ale_py`` module plus tiny gymnasium envs registered as ``ALE/<Game>-v5`` with
the spaces and constructor arguments of ale-py's ``AtariEnv`` (210x160 RGB or grayscale uint8 frames, Discrete(18)
with ``full_action_space=True``, ALE's continuous ``Box([0, -pi, 0], [1, pi, 1])``), so the Atari adapter's logic
runs without the emulator.

Dynamics (one call of ``step`` = one emulator frame): frame ``f`` (1, 2, ...) pays ``REWARD[game]`` (unclipped),
shows the top half of the screen at ``BRIGHT[game]`` on even frames and the bottom half on odd frames (so the
max over the last two frames lights both halves), loses a life every ``LIFE_EVERY`` frames and terminates after
``EPISODE_FRAMES`` frames (or truncates at ``max_num_frames_per_episode``). Every action given is recorded.
"""
from __future__ import annotations

import sys
import types

import gymnasium as gym
import numpy as np

GAMES = ("ToyGame", "OtherToy")
REWARD = {"ToyGame": 1.0, "OtherToy": 3.0}
BRIGHT = {"ToyGame": 200, "OtherToy": 120}
EPISODE_FRAMES = 48
LIFE_EVERY = 10
H, W = 210, 160


class FakeALE(gym.Env):
    def __init__(self, game: str = "ToyGame", mode=None, difficulty=None, obs_type: str = "rgb", frameskip=4,
                 repeat_action_probability: float = 0.25, full_action_space: bool = False, continuous: bool = False,
                 continuous_action_threshold: float = 0.5, max_num_frames_per_episode: int | None = None,
                 render_mode=None, sound_obs: bool = False):
        self.game, self.obs_type = game, obs_type
        self.kwargs = dict(obs_type=obs_type, frameskip=frameskip, repeat_action_probability=repeat_action_probability,
                           full_action_space=full_action_space, continuous=continuous,
                           max_num_frames_per_episode=max_num_frames_per_episode)
        shape = (H, W, 3) if obs_type == "rgb" else (H, W)
        self.observation_space = gym.spaces.Box(0, 255, shape, dtype=np.uint8)
        if continuous:
            self.action_space = gym.spaces.Box(np.array([0.0, -np.pi, 0.0], np.float32),
                                               np.array([1.0, np.pi, 1.0], np.float32), dtype=np.float32)
        else:
            self.action_space = gym.spaces.Discrete(18 if full_action_space else 6)
        self.max_frames = max_num_frames_per_episode
        self.frame, self.actions, self.seeds = 0, [], []

    def _screen(self) -> np.ndarray:
        img = np.zeros((H, W, 3), np.uint8)
        if self.frame % 2 == 0:
            img[: H // 2] = BRIGHT[self.game]
        else:
            img[H // 2:] = BRIGHT[self.game]
        return img if self.obs_type == "rgb" else img[..., 0].copy()

    def _lives(self) -> int:
        return 5 - self.frame // LIFE_EVERY

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.frame = 0
        return self._screen(), {"lives": self._lives(), "episode_frame_number": 0}

    def step(self, action):
        self.actions.append(action)
        self.frame += 1
        terminated = self.frame >= EPISODE_FRAMES
        truncated = self.max_frames is not None and self.frame >= self.max_frames and not terminated
        return (self._screen(), REWARD[self.game], terminated, truncated,
                {"lives": self._lives(), "episode_frame_number": self.frame})


def install_fake_ale(monkeypatch) -> types.ModuleType:
    """Put a fake ``ale_py`` into ``sys.modules`` and register ``ALE/ToyGame-v5`` and ``ALE/OtherToy-v5`` (undone
    by ``monkeypatch`` at the end of the test)."""
    fake = types.ModuleType("ale_py")
    fake.__version__ = "0.0-standin"
    monkeypatch.setitem(sys.modules, "ale_py", fake)
    for game in GAMES:
        env_id = f"ALE/{game}-v5"
        monkeypatch.setitem(gym.registry, env_id, gym.envs.registration.EnvSpec(
            env_id, entry_point=FakeALE, kwargs={"game": game}))
    return fake


def inner_ale(env: gym.Env) -> FakeALE:
    """The FakeALE under gymnasium's wrappers."""
    return env.unwrapped
