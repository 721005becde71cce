"""Multi-domain POPGym (AMAGO-2's ``MultiDomainPOPGym``) as one batched TorchRL env: a game per trial, warm-up
episodes with reward 0, then one scored episode (docs/domains/popgym.md)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from torchrl.data import Categorical, Composite, Unbounded

from ..builtin._base import BatchedTorchEnv
from ..transforms import EPISODE_COUNT_KEY, EPISODE_END_KEY, EPISODE_RETURN_KEY, TASK_ID_KEY, episode_stats_spec
from .popgym import POPGymObservation, _popgym_class

#: The 27 games of the original ``MultiDomainPOPGym.mt_names`` (popgym class names).
MULTIDOMAIN_POPGYM_GAMES = (
    "AutoencodeEasy", "AutoencodeMedium", "AutoencodeHard", "RepeatPreviousEasy", "RepeatPreviousMedium",
    "RepeatPreviousHard", "RepeatFirstEasy", "RepeatFirstMedium", "RepeatFirstHard", "CountRecallEasy",
    "CountRecallMedium", "CountRecallHard", "PositionOnlyCartPoleEasy", "PositionOnlyCartPoleMedium",
    "PositionOnlyCartPoleHard", "VelocityOnlyCartPoleEasy", "VelocityOnlyCartPoleMedium", "VelocityOnlyCartPoleHard",
    "NoisyPositionOnlyCartPoleEasy", "NoisyPositionOnlyCartPoleMedium", "NoisyPositionOnlyCartPoleHard",
    "MultiarmedBanditEasy", "MultiarmedBanditMedium", "HigherLowerEasy", "HigherLowerMedium", "HigherLowerHard",
    "MineSweeperEasy")

#: The original's ``Multigammas.discrete`` for POPGym, for ``--multigammas``.
MULTIDOMAIN_POPGYM_GAMMAS = (0.1, 0.7, 0.9, 0.93, 0.95, 0.98, 0.99, 0.992, 0.994, 0.995, 0.997, 0.998, 0.999, 0.9991,
                             0.9992, 0.9993, 0.9994, 0.9995)

GameFactory = Callable[[], gym.Env]


def _factories(games) -> dict[str, GameFactory]:
    games = MULTIDOMAIN_POPGYM_GAMES if games is None else [games] if isinstance(games, str) else games
    if isinstance(games, Mapping):
        out = dict(games)
        for name, f in out.items():
            if not callable(f):
                raise ValueError(f"games[{name!r}] must be a callable returning a gymnasium env, got {f!r}")
    else:
        names = list(games)
        if len(set(names)) != len(names):
            raise ValueError(f"games has duplicates: {names}")
        out = {name: _popgym_class(name) for name in names}  # popgym classes are their own factories
    if not out:
        raise ValueError("games is empty")
    return out


def _episode_length(env: gym.Env) -> int | None:
    """The game's longest episode if known (popgym ``max_episode_length``, HigherLower's deck), else None."""
    base = env.unwrapped
    length = getattr(base, "max_episode_length", None)
    if length is None and getattr(base, "deck_size", None) is not None:
        length = int(base.deck_size) - 1  # HigherLower: one guess per remaining card
    return None if length is None else int(length)


class MultiDomainPOPGym(BatchedTorchEnv):
    """Batched multi-domain POPGym. Keys: in ``action``; out ``observation``, ``task_id``, ``episode_*``."""

    task_keys = ("game",)
    supports_soft_reset = False  # the env runs its episodes itself; a soft reset is a hard one

    def __init__(self, num_envs: int | None = 1, games: Sequence[str] | Mapping[str, GameFactory] | None = None,
                 warmup_episodes: int = 1, obs_size: int = 26, num_actions: int = 26, **kw):
        if not isinstance(warmup_episodes, int) or warmup_episodes < 0:
            raise ValueError(f"warmup_episodes must be an int >= 0, got {warmup_episodes!r}")
        if obs_size < 1 or num_actions < 1:
            raise ValueError(f"obs_size and num_actions must be >= 1, got {obs_size}, {num_actions}")
        self._factories = _factories(games)
        self.games = list(self._factories)
        self.warmup_episodes, self.obs_size, self.n_actions = int(warmup_episodes), int(obs_size), int(num_actions)
        self.game_obs_dims, self.game_num_actions, self.game_episode_lengths = [], [], []
        for name in self.games:  # build each game once: check that it fits the padded spaces
            env = self._make_game(name)
            dim = env.observation_space.shape[0] - 1  # POPGymObservation appends its own timer; we drop it
            if dim > self.obs_size:
                raise ValueError(f"game {name!r} has a {dim}-dim flat observation, more than obs_size={obs_size}")
            self.game_obs_dims.append(dim)
            self.game_num_actions.append(int(env.action_space.n))
            self.game_episode_lengths.append(_episode_length(env))
            env.close()
        lengths = self.game_episode_lengths
        # warmup + 1 episodes, each followed by one dummy step
        self.max_trial_length = None if None in lengths else (self.warmup_episodes + 1) * (max(lengths) + 1)
        super().__init__(num_envs, **kw)
        n, B, dev = self.n, self.batch_size, self.device
        self.observation_spec = Composite(
            observation=Unbounded((*B, self.obs_size + 4), dtype=torch.float32, device=dev),
            **{TASK_ID_KEY: Categorical(len(self.games), (*B, 1), dtype=torch.int64, device=dev)},
            **episode_stats_spec(B, dev), shape=B, device=dev)
        self.game = torch.zeros(n, dtype=torch.int64)  # task key (reset(task={"game": ...}))
        self._envs: list[dict[int, gym.Env]] = [{} for _ in range(n)]
        self._obs_buf = np.zeros((n, self.obs_size + 4), dtype=np.float32)
        self._timer, self._episode, self._count = (np.zeros(n, dtype=np.int64) for _ in range(3))
        self._reset_next, self._ep_end = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        self._ep_ret, self._last_ret = np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.float32)

    def _make_game(self, name: str) -> POPGymObservation:
        env = POPGymObservation(self._factories[name](), truncated_is_done=True)
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"game {name!r}: only Discrete / MultiDiscrete action spaces can share one Discrete "
                             f"action space, got {env.env.action_space}")
        return env

    def _game_env(self, i: int) -> POPGymObservation:
        g = int(self.game[i])
        env = self._envs[i].get(g)
        if env is None:
            env = self._envs[i][g] = self._make_game(self.games[g])
        return env

    def _seed(self) -> int:
        return int(self._randint(2 ** 31 - 1, 1))

    def _write_obs(self, i: int, flat: np.ndarray, valid: bool, reward: float) -> None:
        buf = self._obs_buf[i]
        buf[:] = 0.0
        buf[: len(flat) - 1] = flat[:-1]  # drop POPGymObservation's per-episode timer
        buf[-4] = self._timer[i] / 1000.0
        buf[-3] = self._episode[i] / self.warmup_episodes if self.warmup_episodes else self._episode[i]
        buf[-2] = float(valid)
        buf[-1] = reward

    def _start(self, i: int) -> None:
        """Start a trial of game ``self.game[i]`` in sub-env ``i``."""
        self._timer[i] = self._episode[i] = self._count[i] = 0
        self._reset_next[i] = self._ep_end[i] = False
        self._ep_ret[i] = self._last_ret[i] = 0.0
        flat, _ = self._game_env(i).reset(seed=self._seed())
        self._write_obs(i, flat, True, 0.0)

    def _hard_reset(self, mask: torch.Tensor) -> None:
        new = self._randint(len(self.games), self.n)
        self.game = torch.where(mask.cpu(), new.cpu(), self.game)
        for i in torch.nonzero(mask.cpu()).flatten().tolist():
            self._start(i)

    def _soft_reset(self, mask: torch.Tensor) -> None:
        self._hard_reset(mask)

    def _on_task_set(self, mask: torch.Tensor) -> None:
        self.game = self.game.cpu()
        if ((self.game < 0) | (self.game >= len(self.games))).any():
            raise ValueError(f"task 'game' must index games (0..{len(self.games) - 1}), got {self.game.tolist()}")
        for i in torch.nonzero(mask.cpu()).flatten().tolist():
            self._start(i)

    def _advance(self, action: torch.Tensor):
        acts = action.reshape(self.n).tolist()
        shown = np.zeros(self.n, dtype=np.float32)
        done = np.zeros(self.n, dtype=bool)
        for i, a in enumerate(acts):
            self._timer[i] += 1
            n_valid = self.game_num_actions[int(self.game[i])]
            valid = 0 <= a < n_valid
            if not valid:
                a = int(self._randint(n_valid, 1))
            env = self._game_env(i)
            self._ep_end[i] = False
            if self._reset_next[i]:  # dummy step: the action is ignored, the next episode starts
                flat, _ = env.reset(seed=self._seed())
                self._reset_next[i], reward = False, 0.0
                self._episode[i] += 1
            else:
                flat, reward, terminated, truncated, _ = env.step(a)
                reward = float(reward)
                self._ep_ret[i] += reward
                if terminated or truncated:
                    self._reset_next[i] = self._ep_end[i] = True
                    self._last_ret[i], self._ep_ret[i] = self._ep_ret[i], 0.0
                    self._count[i] += 1
            self._write_obs(i, flat, valid, reward)
            done[i] = self._episode[i] > self.warmup_episodes
            shown[i] = 0.0 if self._episode[i] < self.warmup_episodes else reward
        return (torch.from_numpy(shown).to(self.device), torch.from_numpy(done).to(self.device),
                torch.zeros(self.n, dtype=torch.bool, device=self.device))

    def _obs(self) -> dict:
        dev, n = self.device, self.n
        end = torch.from_numpy(self._ep_end.copy())
        return {"observation": torch.from_numpy(self._obs_buf.copy()).to(dev),
                TASK_ID_KEY: self.game.reshape(n, 1).to(dev), EPISODE_END_KEY: end.reshape(n, 1).to(dev),
                EPISODE_RETURN_KEY: torch.where(end, torch.from_numpy(self._last_ret), 0.0).reshape(n, 1).to(dev),
                EPISODE_COUNT_KEY: torch.from_numpy(self._count.copy()).reshape(n, 1).to(dev)}


def make_multidomain_popgym_env(num_envs: int, games: Sequence[str] | Mapping[str, GameFactory] | None = None,
                                warmup_episodes: int = 1, **kw) -> MultiDomainPOPGym:
    """``num_envs`` multi-domain POPGym sub-envs; wrap them with ``make_amago_env`` (no ``k_episodes``)."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return MultiDomainPOPGym(num_envs, games=games, warmup_episodes=warmup_episodes, **kw)


def multidomain_popgym_layout(games: Sequence[str] | None = None, warmup_episodes: int = 1, num_actions: int = 26
                              ) -> tuple[list[str], int, int]:
    """``(games, longest trial in steps, shared action count)`` from a probe env (``num_actions`` 0: the most)."""
    probe = MultiDomainPOPGym(1, games=list(games or MULTIDOMAIN_POPGYM_GAMES), warmup_episodes=warmup_episodes)
    try:
        return list(probe.games), probe.max_trial_length, num_actions or max(probe.game_num_actions)
    finally:
        probe.close()
