"""Two-attempt multi-game Procgen (AMAGO's ``TwoAttemptMTProcgen``) as one batched TorchRL env.

A *trial* draws one game (uniformly from ``games``) and one level seed (uniformly from the inclusive
``seed_range``) and gives the agent ``attempts`` (2) tries at that same level. Procgen renders ``64x64x3`` uint8
frames and has 15 actions (``Discrete(15)``, one-hot by default).

Between attempts the original's *dummy-step* soft reset is used: procgen ends an attempt (level completed, agent
died, or procgen's own per-level time limit) and the step that ends it returns procgen's frame as-is (procgen
auto-resets, so that frame is already the level's start); the next step ignores its action, pays 0, rebuilds the
level (same game, level seed and procgen ``rand_seed``) and returns its first frame. Instead of a reset flag, a
4x4 black box is painted into the top-left corner (``frame[1:5, 1:5] = 0``) of every frame from the step that ends
the first attempt on, as in the original. The trial ends (``done`` and ``terminated``) when the last attempt ends;
the original's trial time limit (2000 steps on "easy", 5000 on "memory-hard") is ``make_amago_env(...,
max_steps=horizon)`` (a ``truncated`` trial end).

Per-step keys (batch ``[*B]``):

- ``"observation"`` ``[*B, 64, 64, 3]`` uint8 RGB frame (HWC).
- ``"task_id"`` ``[*B, 1]`` int64: index of the trial's game in ``games`` (bookkeeping: per-game eval returns).
- ``"episode_end"`` / ``"episode_return"`` / ``"episode_count"``: per-attempt bookkeeping
  (``torchrl_amago.envs.transforms``): on the step an attempt ends, its return (after ``reward_scales``), and how
  many attempts have ended in this trial. The trainer logs them as ``episode_<k>_return`` (k = 0, 1).

Distribution modes: ``"easy"``, ``"hard"``, or ``"memory-hard"`` (the original: the six games that have procgen's
``"memory"`` mode use it, the other games use ``"hard"``).

``procgen`` is optional and imported lazily. On Python 3.11 install the ``procgen-mirror`` wheel (the official
``procgen`` has no wheels beyond Python 3.10): ``pip install procgen-mirror``. ``game_factory`` replaces procgen
with any object that has procgen's gym3 interface (``observe()``, ``act()``, ``close()``), e.g. in tests.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torchrl.data import Bounded, Categorical, Composite

from ..._optional import require
from ..builtin._base import BatchedTorchEnv
from ..transforms import EPISODE_COUNT_KEY, EPISODE_END_KEY, EPISODE_RETURN_KEY, TASK_ID_KEY, episode_stats_spec

_FEATURE = "Procgen envs (torchrl_amago.envs.libs.procgen)"
#: pip package that provides ``import procgen`` on Python 3.11 (the official ``procgen`` stops at 3.10)
PROCGEN_PIP_PACKAGE = "procgen-mirror"
#: Level seeds above the train range, up to this bound, are the unseen evaluation levels.
PROCGEN_TEST_SEED_MAX = 10_000_000

#: the 16 procgen games, in the original's order
PROCGEN_GAMES = ("dodgeball", "caveflyer", "heist", "jumper", "maze", "miner", "fruitbot", "plunder", "chaser",
                 "leaper", "bigfish", "starpilot", "bossfight", "ninja", "coinrun", "climber")
#: games with procgen's "memory" distribution (used by "memory-hard"; the others then use "hard")
MEMORY_GAMES = ("dodgeball", "caveflyer", "heist", "jumper", "maze", "miner")
DISTRIBUTION_MODES = ("easy", "hard", "memory-hard")
#: the original example's settings per ``--distribution``: games, reward scales, procgen distribution mode and the
#: trial time limit
PROCGEN_SETTINGS = {
    "easy": dict(games=("climber", "coinrun", "jumper", "ninja", "leaper"), reward_scales={},
                 distribution_mode="easy", horizon=2000),
    "easy-rescaled": dict(games=("climber", "coinrun", "jumper", "ninja", "leaper"),
                          reward_scales={"coinrun": 100.0, "climber": 0.1}, distribution_mode="easy", horizon=2000),
    "memory-hard": dict(games=PROCGEN_GAMES, reward_scales={}, distribution_mode="memory-hard", horizon=5000),
}
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
    """One procgen level as a gym3 env (``num=1``, ``num_levels=1``, ``start_level=level_seed``): procgen
    auto-resets it to the same level. ``distribution_mode`` is procgen's own (see :func:`procgen_distribution`)."""
    procgen = _procgen()
    return procgen.ProcgenGym3Env(num=1, env_name=game, num_levels=1, start_level=int(level_seed),
                                  distribution_mode=distribution_mode, use_sequential_levels=False,
                                  rand_seed=int(rand_seed))


def paint_attempt_marker(frame: np.ndarray) -> np.ndarray:
    """The original's "not the first attempt" marker: a 4x4 black box at rows/cols 1..4 (in place)."""
    frame[..., 1:5, 1:5, :] = 0
    return frame


class TwoAttemptMTProcgen(BatchedTorchEnv):
    """Batched two-attempt multi-game Procgen (see the module docstring). ``num_envs=None`` gives an unbatched env.

    Args:
        games: procgen game names (from ``PROCGEN_GAMES``); each trial draws one uniformly.
        num_envs: number of sub-envs (each holds one procgen level, stepped in a Python loop).
        distribution_mode: ``"easy"``, ``"hard"`` or ``"memory-hard"``.
        reward_scales: ``{game: factor}`` multiplying that game's rewards (the original's ``reward_scales``).
        seed_range: inclusive range of level seeds (the original trains on ``(0, train_seeds)`` and tests on
            ``(train_seeds + 1, 10_000_000)``).
        attempts: attempts per trial (the original: 2).
        game_factory: ``(game, level_seed, procgen_distribution_mode, rand_seed) -> gym3 env``; default
            :func:`make_procgen_level` (needs ``procgen``).
        categorical_action_encoding / device / seed: as the builtin envs.

    Task keys (``get_task()`` / ``reset(task=...)``): ``task_id`` (game index), ``level_seed`` and ``rand_seed``
    (``[*B]`` int64).
    """

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
        self.distribution_mode, self.seed_range, self.attempts = distribution_mode, (lo, hi), attempts
        self.reward_scales = reward_scales
        self._scale = np.array([float(reward_scales.get(g, 1.0)) for g in self.games], dtype=np.float64)
        self.game_factory = game_factory
        super().__init__(num_envs, **kw)
        n, dev, B = self.n, self.device, self.batch_size
        z = torch.zeros(n, dtype=torch.int64, device=dev)
        self.task_id, self.level_seed, self.rand_seed = z.clone(), z.clone(), z.clone()
        self._levels: list[object | None] = [None] * n  # the procgen level each slot is playing
        # host-side state, one row per slot
        self._frame = np.zeros((n, *FRAME_SHAPE), dtype=np.uint8)
        self._count = np.zeros(n, dtype=np.int64)  # attempts finished in this trial
        self._pending = np.zeros(n, dtype=bool)  # the next step is the dummy (level rebuild) step
        self._ep_ret = np.zeros(n, dtype=np.float64)
        self._ep_end = np.zeros(n, dtype=bool)
        self._last_ret = np.zeros(n, dtype=np.float32)
        self.observation_spec = Composite(
            observation=Bounded(0, 255, (*B, *FRAME_SHAPE), dtype=torch.uint8, device=dev),
            **{TASK_ID_KEY: Categorical(len(self.games), (*B, 1), dtype=torch.int64, device=dev)},
            **episode_stats_spec(B, dev), shape=B, device=dev)

    # ---- procgen levels --------------------------------------------------------------------------------------
    def _frame_of(self, i: int, ob) -> None:
        rgb = ob["rgb"] if isinstance(ob, Mapping) else ob
        frame = np.asarray(rgb, dtype=np.uint8).reshape(FRAME_SHAPE)
        self._frame[i] = frame
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
        self._frame_of(i, ob)
        self._ep_ret[i] = 0.0

    # ---- BatchedTorchEnv hooks -------------------------------------------------------------------------------
    def _hard_reset(self, mask):
        ids = mask.nonzero().squeeze(-1)
        if len(ids):
            lo, hi = self.seed_range
            k = len(ids)
            self.task_id[ids] = self._randint(len(self.games), k)
            self.level_seed[ids] = torch.randint(lo, hi + 1, (k,), generator=self.rng, device=self.device)
            self.rand_seed[ids] = self._randint(2 ** 31 - 1, k)
        self._soft_reset(mask)

    def _soft_reset(self, mask):  # restart the trial on the same game and level
        for i in mask.nonzero().squeeze(-1).tolist():
            self._count[i] = 0
            self._pending[i] = False
            self._ep_end[i] = False
            self._last_ret[i] = 0.0
            self._start_attempt(i)

    def _on_task_set(self, mask):
        if ((self.task_id < 0) | (self.task_id >= len(self.games))).any():
            raise ValueError(f"task_id must be in [0, {len(self.games)}), got {self.task_id.tolist()}")
        self._soft_reset(mask)

    def _obs(self):
        dev = self.device
        t = lambda x: torch.from_numpy(x.copy()).to(dev)  # noqa: E731
        return {"observation": t(self._frame), TASK_ID_KEY: self.task_id.unsqueeze(-1).clone(),
                EPISODE_END_KEY: t(self._ep_end).unsqueeze(-1), EPISODE_RETURN_KEY: t(self._last_ret).unsqueeze(-1),
                EPISODE_COUNT_KEY: t(self._count).unsqueeze(-1)}

    def _advance(self, action):
        n = self.n
        acts = action.cpu().numpy().astype(np.int32)
        reward = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        self._ep_end[:] = False
        self._last_ret[:] = 0.0
        for i in range(n):
            if self._pending[i]:  # dummy step: the action is ignored, the next attempt starts on the same level
                self._pending[i] = False
                self._start_attempt(i)
                continue
            level = self._levels[i]
            level.act(acts[i: i + 1])
            rew, ob, first = level.observe()
            r = float(np.asarray(rew).reshape(-1)[0]) * self._scale[int(self.task_id[i])]
            reward[i] = r
            self._ep_ret[i] += r
            if bool(np.asarray(first).reshape(-1)[0]):  # procgen ended the attempt (and auto-reset the level)
                self._count[i] += 1
                self._ep_end[i] = True
                self._last_ret[i] = self._ep_ret[i]
                if self._count[i] >= self.attempts:
                    terminated[i] = True
                else:
                    self._pending[i] = True
            self._frame_of(i, ob)
        dev = self.device
        term = torch.from_numpy(terminated).to(dev)
        return torch.from_numpy(reward).to(dev), term, torch.zeros_like(term)

    def close(self, *, raise_if_closed: bool = True):
        for i, level in enumerate(getattr(self, "_levels", [])):
            if level is not None:
                level.close()
                self._levels[i] = None
        return super().close(raise_if_closed=raise_if_closed)

    # ---- names -----------------------------------------------------------------------------------------------
    def current_games(self) -> list[str]:
        """Game name of every sub-env's current trial."""
        return [self.games[int(i)] for i in self.task_id]


def max_trial_length(max_attempt_steps: int, attempts: int = 2) -> int:
    """Longest trial: ``attempts`` attempts of ``max_attempt_steps`` plus one dummy step between attempts."""
    return attempts * max_attempt_steps + (attempts - 1)


def make_procgen_env(games: Sequence[str], num_envs: int, distribution_mode: str = "easy",
                     seed_range: tuple[int, int] = (0, 2000), reward_scales: Mapping[str, float] | None = None,
                     **kw) -> TwoAttemptMTProcgen:
    """``num_envs`` batched two-attempt Procgen trials (batch size ``[num_envs]``); see :class:`TwoAttemptMTProcgen`.

    Wrap the result with :func:`torchrl_amago.envs.make_amago_env` (``max_steps=`` the trial time limit) to add
    AMAGO's per-step keys.
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return TwoAttemptMTProcgen(games, num_envs, distribution_mode=distribution_mode, seed_range=seed_range,
                               reward_scales=reward_scales, **kw)


__all__ = ["TwoAttemptMTProcgen", "make_procgen_env", "make_procgen_level", "procgen_distribution",
           "paint_attempt_marker", "max_trial_length", "PROCGEN_GAMES", "MEMORY_GAMES", "DISTRIBUTION_MODES",
           "PROCGEN_SETTINGS", "PROCGEN_PIP_PACKAGE", "FRAME_SHAPE", "N_ACTIONS"]
