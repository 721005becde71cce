"""Two-attempt multi-game Procgen (AMAGO's ``TwoAttemptMTProcgen``) as one batched env (docs/domains/procgen.md)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torchrl.data import Bounded, Categorical, Composite

from ..._optional import require
from ...suites import PROCGEN_GAMES, PROCGEN_PIP_PACKAGE, PROCGEN_SETTINGS, PROCGEN_TEST_SEED_MAX
from ..builtin._base import HostAttemptsEnv
from ..transforms import TASK_ID_KEY, episode_stats_spec

_FEATURE = "Procgen envs (torchrl_amago.envs.libs.procgen)"
#: games with procgen's "memory" distribution (used by "memory-hard"; the others then use "hard")
MEMORY_GAMES = ("dodgeball", "caveflyer", "heist", "jumper", "maze", "miner")
DISTRIBUTION_MODES = ("easy", "hard", "memory-hard")
FRAME_SHAPE = (64, 64, 3)
N_ACTIONS = 15

# game_factory(game, level_seed, distribution_mode, rand_seed) -> a gym3 env with num=1
GameFactory = Callable[[str, int, str, int], object]


def _procgen():
    return require("procgen", PROCGEN_PIP_PACKAGE, _FEATURE)


def procgen_distribution(game: str, distribution_mode: str) -> str:
    """The procgen ``distribution_mode`` a game runs with (``"memory-hard"`` -> ``"memory"`` or ``"hard"``)."""
    if distribution_mode == "memory-hard":
        return "memory" if game in MEMORY_GAMES else "hard"
    return distribution_mode


def make_procgen_level(game: str, level_seed: int, distribution_mode: str, rand_seed: int):
    """One procgen level as a gym3 env (``num=1``, ``num_levels=1``; it auto-resets to the same level)."""
    procgen = _procgen()
    return procgen.ProcgenGym3Env(num=1, env_name=game, num_levels=1, start_level=int(level_seed),
                                  distribution_mode=distribution_mode, use_sequential_levels=False,
                                  rand_seed=int(rand_seed))


def paint_attempt_marker(frame: np.ndarray) -> np.ndarray:
    """The original's "not the first attempt" marker: a 4x4 black box at rows/cols 1..4 (in place)."""
    frame[..., 1:5, 1:5, :] = 0
    return frame


class TwoAttemptMTProcgen(HostAttemptsEnv):
    """Batched two-attempt multi-game Procgen. Task keys: ``task_id``, ``level_seed``, ``rand_seed``."""

    n_actions = N_ACTIONS
    task_keys = ("task_id", "level_seed", "rand_seed")

    def __init__(self, games: Sequence[str], num_envs: int | None = 1, distribution_mode: str = "easy",
                 reward_scales: Mapping[str, float] | None = None, seed_range: tuple[int, int] = (0, 2000),
                 attempts: int = 2, game_factory: GameFactory | None = None, **kw):
        if isinstance(games, str) or not games:
            raise ValueError(f"games must be a non-empty list of procgen game names, got {games!r}")
        unknown = [g for g in games if g not in PROCGEN_GAMES]
        if unknown:
            raise ValueError(f"unknown procgen game(s) {unknown}; choose from {list(PROCGEN_GAMES)}")
        if distribution_mode not in DISTRIBUTION_MODES:
            raise ValueError(f"distribution_mode must be one of {list(DISTRIBUTION_MODES)}, got {distribution_mode!r}")
        lo, hi = (int(s) for s in seed_range)
        if not 0 <= lo <= hi < 2 ** 31:
            raise ValueError(f"seed_range must be (low, high) with 0 <= low <= high < 2**31, got {seed_range!r}")
        if not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be a positive int, got {attempts!r}")
        reward_scales = dict(reward_scales or {})
        bad = [g for g in reward_scales if g not in PROCGEN_GAMES]
        if bad:
            raise ValueError(f"reward_scales names unknown procgen game(s) {bad}")
        if game_factory is None:
            _procgen()  # fail here, naming the pip package
            game_factory = make_procgen_level
        self.games = list(games)
        self.distribution_mode, self.seed_range = distribution_mode, (lo, hi)
        self.reward_scales, self.game_factory = reward_scales, game_factory
        self._scale = np.array([float(reward_scales.get(g, 1.0)) for g in self.games], dtype=np.float64)
        super().__init__(num_envs, **kw)
        n, dev, B = self.n, self.device, self.batch_size
        z = torch.zeros(n, dtype=torch.int64, device=dev)
        self.task_id, self.level_seed, self.rand_seed = z.clone(), z.clone(), z.clone()
        self._levels: list[object | None] = [None] * n  # the procgen level each slot is playing
        self._frame = np.zeros((n, *FRAME_SHAPE), dtype=np.uint8)
        self._init_attempts(attempts)
        self.observation_spec = Composite(
            observation=Bounded(0, 255, (*B, *FRAME_SHAPE), dtype=torch.uint8, device=dev),
            **{TASK_ID_KEY: Categorical(len(self.games), (*B, 1), dtype=torch.int64, device=dev)},
            **episode_stats_spec(B, dev), shape=B, device=dev)

    def _show(self, i: int, ob) -> None:
        rgb = ob["rgb"] if isinstance(ob, Mapping) else ob
        self._frame[i] = np.asarray(rgb, dtype=np.uint8).reshape(FRAME_SHAPE)
        if self._count[i] > 0:
            paint_attempt_marker(self._frame[i])

    def _start_attempt(self, i: int) -> None:
        """(Re)build slot i's level (same game, level seed and rand seed) and show its first frame."""
        if self._levels[i] is not None:
            self._levels[i].close()
        game = self.games[int(self.task_id[i])]
        self._levels[i] = self.game_factory(game, int(self.level_seed[i]),
                                            procgen_distribution(game, self.distribution_mode),
                                            int(self.rand_seed[i]))
        _, ob, _ = self._levels[i].observe()
        self._show(i, ob)
        self._ep_ret[i] = 0.0

    def _hard_reset(self, mask):
        ids = mask.nonzero().squeeze(-1)
        if len(ids):
            lo, hi = self.seed_range
            k = len(ids)
            self.task_id[ids] = self._randint(len(self.games), k)
            self.level_seed[ids] = torch.randint(lo, hi + 1, (k,), generator=self.rng, device=self.device)
            self.rand_seed[ids] = self._randint(2 ** 31 - 1, k)
        self._soft_reset(mask)

    def _on_task_set(self, mask):
        if ((self.task_id < 0) | (self.task_id >= len(self.games))).any():
            raise ValueError(f"task_id must be in [0, {len(self.games)}), got {self.task_id.tolist()}")
        self._soft_reset(mask)

    def _obs(self):
        return {"observation": torch.from_numpy(self._frame.copy()).to(self.device),
                TASK_ID_KEY: self.task_id.unsqueeze(-1).clone(), **self._attempt_stats(success=False)}

    def _slot_step(self, i: int, action: int):
        level = self._levels[i]
        level.act(np.array([action], dtype=np.int32))
        rew, ob, first = level.observe()
        r = float(np.asarray(rew).reshape(-1)[0]) * self._scale[int(self.task_id[i])]
        # procgen ends an attempt by auto-resetting the level (`first`); the next step rebuilds it
        return ob, r, bool(np.asarray(first).reshape(-1)[0]), False, True

    def close(self, *, raise_if_closed: bool = True):
        for i, level in enumerate(getattr(self, "_levels", [])):
            if level is not None:
                level.close()
                self._levels[i] = None
        return super().close(raise_if_closed=raise_if_closed)

    def current_games(self) -> list[str]:
        """Game name of every sub-env's current trial."""
        return [self.games[int(i)] for i in self.task_id]


def make_procgen_env(games: Sequence[str], num_envs: int, distribution_mode: str = "easy",
                     seed_range: tuple[int, int] = (0, 2000), reward_scales: Mapping[str, float] | None = None,
                     **kw) -> TwoAttemptMTProcgen:
    """``num_envs`` batched :class:`TwoAttemptMTProcgen` trials; wrap with ``make_amago_env(max_steps=horizon)``."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return TwoAttemptMTProcgen(games, num_envs, distribution_mode=distribution_mode, seed_range=seed_range,
                               reward_scales=reward_scales, **kw)
