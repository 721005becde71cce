"""Atari 2600 games (ALE) as batched TorchRL envs prepared like AMAGO's ``AtariGame`` wrapper, one game per slot with
``task_id`` (docs/domains/atari.md). ``pip install ale-py``."""
from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F
from torchrl.envs import GymWrapper, SerialEnv

from ..._optional import require
from ...spaces import unit_box_affine
from ...suites import ATARI_ACTION_SPACES as ACTION_SPACES
from ...suites import ATARI_GAMES as DEFAULT_GAMES
from ...suites import ATARI_TIME_LIMIT_FRAMES as TIME_LIMIT_FRAMES

_FEATURE = "Atari envs (torchrl_amago.envs.libs.atari)"
PACKAGE = "ale-py"

NUM_ACTIONS = 18

# ALE's full action set, indexed by (vertical, horizontal) with or without fire
_NO_FIRE = {(0, 0): 0, (1, 0): 2, (0, 1): 3, (0, -1): 4, (-1, 0): 5, (1, 1): 6, (1, -1): 7, (-1, 1): 8, (-1, -1): 9}
_FIRE = {(0, 0): 1, (1, 0): 10, (0, 1): 11, (0, -1): 12, (-1, 0): 13, (1, 1): 14, (1, -1): 15, (-1, 1): 16,
         (-1, -1): 17}


def buttons_to_action(buttons) -> int:
    """5 buttons ``[up, down, left, right, fire]`` (0/1) -> ALE's full-action index (opposite directions cancel)."""
    up, down, left, right, fire = (bool(b) for b in np.asarray(buttons).reshape(5))
    return (_FIRE if fire else _NO_FIRE)[(int(up) - int(down), int(right) - int(left))]


def _ale():
    ale_py = require("ale_py", PACKAGE, _FEATURE)
    gym.register_envs(ale_py)
    return ale_py


def _game_ids() -> dict[str, str]:
    """lower-case game name -> registered gymnasium id (``ALE/<Game>-v5``)."""
    return {env_id[4:-3].lower(): env_id for env_id in gym.registry
            if isinstance(env_id, str) and env_id.startswith("ALE/") and env_id.endswith("-v5")}


def atari_game_names() -> list[str]:
    """Every game ale-py registers (e.g. ``"Pong"``, ``"MsPacman"``), sorted."""
    _ale()
    return sorted(env_id[4:-3] for env_id in _game_ids().values())


def atari_game_id(game: str) -> str:
    """The gymnasium id of ``game`` (``"Pong"``, ``"pong"`` or ``"ALE/Pong-v5"``); ValueError for unknown games."""
    _ale()
    ids = _game_ids()
    name = game[4:] if game.startswith("ALE/") else game
    name = name[:-3] if name.endswith("-v5") else name
    if name.lower() not in ids:
        raise ValueError(f"unknown Atari game {game!r}; choose one of {sorted(i[4:-3] for i in ids.values())}")
    return ids[name.lower()]


def atari_obs_shape(resolution: Sequence[int] = (84, 84), grayscale: bool = False, channels_last: bool = False
                    ) -> tuple[int, int, int]:
    c = 1 if grayscale else 3
    h, w = (int(x) for x in resolution)
    return (h, w, c) if channels_last else (c, h, w)


def atari_action_dim(action_space: str = "discrete") -> int:
    """Width of ``prev_action`` for each action-space option (18 one-hot, 5 buttons, 3 continuous)."""
    if action_space not in ACTION_SPACES:
        raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {action_space!r}")
    return {"discrete": NUM_ACTIONS, "multibinary": 5, "continuous": 3}[action_space]


def resize_area(frame: np.ndarray, resolution: Sequence[int]) -> np.ndarray:
    """An ``[H, W]`` or ``[H, W, C]`` uint8 frame resized to ``resolution`` by area averaging -> ``[h, w, C]``."""
    x = torch.from_numpy(np.ascontiguousarray(frame))
    if x.ndim == 2:
        x = x[..., None]
    h, w = (int(r) for r in resolution)
    if tuple(x.shape[:2]) == (h, w):
        return x.numpy()
    y = F.interpolate(x.permute(2, 0, 1)[None].float(), size=(h, w), mode="area")[0]
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


class AtariPreprocess(gym.Wrapper):
    """The AMAGO Atari preprocessing over one ALE env built with ``frameskip=1`` and the full action space."""

    def __init__(self, env: gym.Env, *, task_id: int = 0, frame_skip: int = 4, resolution: Sequence[int] = (84, 84),
                 grayscale: bool = False, channels_last: bool = False, action_space: str = "discrete",
                 time_limit_frames: int = TIME_LIMIT_FRAMES, terminal_on_life_loss: bool = False,
                 clip_rewards: bool = False, num_tasks: int | None = None):
        super().__init__(env)
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        if time_limit_frames < 1:
            raise ValueError(f"time_limit_frames must be >= 1, got {time_limit_frames}")
        if action_space not in ACTION_SPACES:
            raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {action_space!r}")
        self.task_id = int(task_id)
        self.frame_skip = int(frame_skip)
        self.resolution = tuple(int(r) for r in resolution)
        self.grayscale, self.channels_last = bool(grayscale), bool(channels_last)
        self.time_limit_frames = int(time_limit_frames)
        self.terminal_on_life_loss, self.clip_rewards = bool(terminal_on_life_loss), bool(clip_rewards)
        self.action_kind = action_space
        inner = env.action_space
        if action_space == "continuous":
            if not isinstance(inner, gym.spaces.Box):
                raise ValueError(f"action_space='continuous' needs an ALE env made with continuous=True, got {inner}")
            self._loc, self._scale = unit_box_affine(inner.low, inner.high, "ALE continuous action space")
            self.action_space = gym.spaces.Box(-1.0, 1.0, inner.shape, dtype=np.float32)
        else:
            if not (isinstance(inner, gym.spaces.Discrete) and inner.n == NUM_ACTIONS):
                raise ValueError(f"Atari envs must use the full action space (Discrete(18), full_action_space=True) "
                                 f"so that all games share one action space; got {inner}")
            self.action_space = (gym.spaces.Discrete(NUM_ACTIONS) if action_space == "discrete"
                                 else gym.spaces.MultiBinary(5))
        n_tasks = max(int(num_tasks or 0), self.task_id + 1)
        self.observation_space = gym.spaces.Dict({
            "observation": gym.spaces.Box(0, 255, atari_obs_shape(self.resolution, self.grayscale, self.channels_last),
                                          dtype=np.uint8),
            "task_id": gym.spaces.Box(0, n_tasks - 1, (1,), dtype=np.int64),
        })
        self.frames = self.lives = 0

    def _screen(self, frame: np.ndarray) -> np.ndarray:
        img = np.asarray(frame)
        if self.grayscale and img.ndim == 3:  # ITU-R 601 luma, as ALE's grayscale
            img = (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
        if not self.grayscale and img.ndim == 2:
            raise ValueError("grayscale=False needs an ALE env with obs_type='rgb'")
        img = resize_area(img, self.resolution)  # [h, w, C]
        return img if self.channels_last else np.ascontiguousarray(img.transpose(2, 0, 1))

    def _obs(self, frame) -> dict:
        return {"observation": self._screen(frame), "task_id": np.array([self.task_id], dtype=np.int64)}

    def _ale_action(self, action):
        if self.action_kind == "continuous":
            a = np.clip(np.asarray(action, dtype=np.float32).reshape(self._loc.shape), -1.0, 1.0)
            return a * self._scale + self._loc
        if self.action_kind == "multibinary":
            return buttons_to_action(action)
        return int(np.asarray(action).reshape(()))

    def reset(self, *, seed=None, options=None):
        frame, info = self.env.reset(seed=seed, options=options)
        self.frames, self.lives = 0, int(info.get("lives", 0))
        return self._obs(frame), info

    def step(self, action):
        a = self._ale_action(action)
        total, terminated, truncated, info = 0.0, False, False, {}
        last = prev = None
        for i in range(self.frame_skip):
            frame, reward, terminated, truncated, info = self.env.step(a)
            self.frames += 1
            total += float(reward)
            prev, last = last, frame
            if terminated or truncated or self.frames >= self.time_limit_frames:
                break
        pooled = last if prev is None else np.maximum(prev, last)
        truncated = bool(truncated) or self.frames >= self.time_limit_frames
        lives = int(info.get("lives", self.lives))
        if self.terminal_on_life_loss and lives < self.lives:
            terminated = True
        self.lives = lives
        if self.clip_rewards:
            total = float(np.sign(total))
        return self._obs(pooled), total, bool(terminated), truncated and not terminated, info


def make_atari_gym(game: str, *, task_id: int = 0, num_tasks: int | None = None, frame_skip: int = 4,
                   sticky_action_prob: float = 0.25, resolution: Sequence[int] = (84, 84), grayscale: bool = False,
                   channels_last: bool = False, action_space: str = "discrete",
                   time_limit_frames: int = TIME_LIMIT_FRAMES, terminal_on_life_loss: bool = False,
                   clip_rewards: bool = False) -> AtariPreprocess:
    """One prepared gymnasium Atari env (see :class:`AtariPreprocess`)."""
    env_id = atari_game_id(game)
    kw = dict(frameskip=1, repeat_action_probability=float(sticky_action_prob), full_action_space=True,
              obs_type="grayscale" if grayscale else "rgb", max_num_frames_per_episode=int(time_limit_frames))
    if action_space == "continuous":
        kw["continuous"] = True
    return AtariPreprocess(gym.make(env_id, **kw), task_id=task_id, num_tasks=num_tasks, frame_skip=frame_skip,
                           resolution=resolution, grayscale=grayscale, channels_last=channels_last,
                           action_space=action_space, time_limit_frames=time_limit_frames,
                           terminal_on_life_loss=terminal_on_life_loss, clip_rewards=clip_rewards)


def make_atari_torchrl(game: str, categorical_action_encoding: bool = False, **kwargs) -> GymWrapper:
    """One unbatched TorchRL env (``GymWrapper``) for ``game``; ``kwargs`` go to :func:`make_atari_gym`."""
    return GymWrapper(make_atari_gym(game, **kwargs), categorical_action_encoding=categorical_action_encoding)


def slot_games(games: Sequence[str], num_envs: int) -> list[str]:
    """The game each of ``num_envs`` slots plays: round robin over ``games``."""
    return [games[i % len(games)] for i in range(num_envs)]


def make_atari_env(games: str | Sequence[str], num_envs: int, categorical_action_encoding: bool = False,
                   **kwargs) -> SerialEnv:
    """``num_envs`` Atari envs in one ``SerialEnv``; slot ``i`` plays ``games[i % len(games)]`` (its ``task_id``)."""
    games = [games] if isinstance(games, str) else list(games)
    if not games:
        raise ValueError("games must name at least one Atari game")
    if len({g.lower() for g in games}) != len(games):
        raise ValueError(f"games must not repeat (task ids index them), got {games}")
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    for g in games:  # fail here, with the list of names, rather than inside SerialEnv
        atari_game_id(g)
    if kwargs.get("action_space", "discrete") not in ACTION_SPACES:
        raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {kwargs['action_space']!r}")
    slot_kwargs = [dict(game=games[i % len(games)], task_id=i % len(games), num_tasks=len(games),
                        categorical_action_encoding=categorical_action_encoding, **kwargs) for i in range(num_envs)]
    return SerialEnv(num_envs, make_atari_torchrl, create_env_kwargs=slot_kwargs)
