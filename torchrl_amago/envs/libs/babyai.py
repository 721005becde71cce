"""Multi-task meta-RL BabyAI (AMAGO's ``MultitaskMetaBabyAI``) as one batched TorchRL env: k attempts on one task and
layout per trial, restarted with a dummy step (docs/domains/babyai.md). ``pip install minigrid``."""
from __future__ import annotations

from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torchrl.data import Bounded, Categorical, Composite

from ..._optional import require
from ...suites import BABYAI_OBS_KINDS as OBS_KINDS
from ...suites import babyai_max_trial_length as max_trial_length
from ...suites import full_task_name
from ..builtin._base import HostAttemptsEnv
from ..transforms import TASK_ID_KEY, episode_stats_spec

_FEATURE = "BabyAI envs (torchrl_amago.envs.libs.babyai)"

#: the mission vocabulary of the original (token = index + 2; 0 = blank, 1 = unknown word)
BABYAI_WORDS = ("a", "ball", "behind", "blue", "box", "door", "door,", "front", "go", "green", "grey", "in", "key",
                "left", "object", "of", "on", "open", "pick", "purple", "red", "right", "the", "then", "to", "up",
                "yellow", "you", "your")
BLANK_TOKEN, UNKNOWN_TOKEN = 0, 1
#: number of distinct mission tokens (blank + unknown + words)
BABYAI_VOCAB_SIZE = len(BABYAI_WORDS) + 2
MISSION_LENGTH = 9
#: tasks the original leaves out of "all BabyAI tasks" (missions longer than 9 words or very hard levels)
BANNED_BABYAI_TASKS = ("GoToSeq", "OpenRedBlueDoorsDebug", "OpenTwoDoors", "OpenDoorsOrderN4Debug", "OpenDoorsOrder",
                       "PutNextLocal", "PutNext", "MiniBossLevel", "BossLevel", "BossLevelNoUnlock", "SynthSeq",
                       "SynthLoc", "Synth", "MoveTwoAcross")
_WORD_TOKEN = {w: i + 2 for i, w in enumerate(BABYAI_WORDS)}


def tokenize_mission(mission: str, length: int = MISSION_LENGTH) -> np.ndarray:
    """``[length]`` int32 tokens of a mission string (split on whitespace; words past ``length`` are dropped)."""
    out = np.zeros(length, dtype=np.int32)
    for i, word in enumerate(str(mission).split()[:length]):
        out[i] = _WORD_TOKEN.get(word, UNKNOWN_TOKEN)
    return out


def _minigrid():
    return require("minigrid", "minigrid", _FEATURE)


def babyai_task_names(include_banned: bool = False) -> list[str]:
    """Every registered BabyAI env id (``"BabyAI-..."``), without the original's banned ones unless asked."""
    _minigrid()
    names = [n for n in gym.envs.registry if n.startswith("BabyAI-")]
    if not include_banned:
        names = [n for n in names if not any(b in n for b in BANNED_BABYAI_TASKS)]
    return sorted(names)


def make_minigrid_env(task: str, obs_kind: str = "partial-grid", max_steps: int | None = None) -> gym.Env:
    """One gymnasium BabyAI env with the minigrid observation wrapper ``obs_kind`` needs (``minigrid`` required).
    ``max_steps``: the attempt's time limit, which also sets minigrid's reward ``1 - 0.9 * steps / max_steps``
    (None: the task's own)."""
    mg = _minigrid()
    from minigrid import wrappers

    task = full_task_name(task)
    if task not in gym.envs.registry:
        raise ValueError(f"unknown BabyAI task {task!r}; choose from babyai_task_names() (minigrid {mg.__version__})")
    env = gym.make(task) if max_steps is None else gym.make(task, max_steps=max_steps)
    if obs_kind == "full-grid":
        env = wrappers.FullyObsWrapper(env)
    elif obs_kind == "partial-image":
        env = wrappers.RGBImgPartialObsWrapper(env, tile_size=9)
    elif obs_kind == "full-image":
        env = wrappers.RGBImgObsWrapper(env)
    return env


def babyai_max_steps(task: str) -> int:
    """The time limit of one attempt of ``task`` (minigrid's ``max_steps`` after a reset)."""
    env = make_minigrid_env(task)
    try:
        env.reset(seed=0)
        return int(env.unwrapped.max_steps)
    finally:
        env.close()


class MultitaskMetaBabyAI(HostAttemptsEnv):
    """Batched k-attempt multi-task BabyAI (module docstring). Task keys: ``task_index``, ``layout_seed``.

    ``max_steps`` caps every attempt (minigrid's time limit, which also sets the step penalty of its reward; None:
    each task's own); a custom ``env_factory(task)`` then gets it as ``env_factory(task, max_steps=...)``.
    ``hide_mission``: every ``mission`` token is blank, so the task is told only by reward, as in a hidden-goal
    meta-RL task (e.g. ``PickupDistDebug``: which object to pick up, where a wrong pick ends the attempt)."""

    n_actions = 7
    task_keys = ("task_index", "layout_seed")

    def __init__(self, task_names: Sequence[str], num_envs: int | None = 1, k_episodes: int = 2,
                 seed_range: tuple[int, int] = (0, 1_000_000), obs_kind: str = "partial-grid",
                 max_steps: int | None = None, timeout_terminates: bool = True,
                 env_factory: Callable[..., gym.Env] | None = None, hide_mission: bool = False, **kw):
        if isinstance(task_names, str) or not task_names:
            raise ValueError(f"task_names must be a non-empty list of BabyAI env ids, got {task_names!r}")
        if not isinstance(k_episodes, int) or k_episodes < 1:
            raise ValueError(f"k_episodes must be a positive int, got {k_episodes!r}")
        lo, hi = (int(s) for s in seed_range)
        if not 0 <= lo <= hi:
            raise ValueError(f"seed_range must be (low, high) with 0 <= low <= high, got {seed_range!r}")
        if obs_kind not in OBS_KINDS:
            raise ValueError(f"obs_kind must be one of {list(OBS_KINDS)}, got {obs_kind!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
        if env_factory is None:
            _minigrid()
            task_names = [full_task_name(t) for t in task_names]
            unknown = [t for t in task_names if t not in gym.envs.registry]
            if unknown:
                raise ValueError(f"unknown BabyAI task(s) {unknown}; choose from babyai_task_names()")
            env_factory = lambda task, **kw: make_minigrid_env(task, obs_kind, **kw)  # noqa: E731
        self.task_names = list(task_names)
        self.k_episodes, self.seed_range, self.obs_kind, self.max_steps = k_episodes, (lo, hi), obs_kind, max_steps
        self.timeout_terminates, self.env_factory = bool(timeout_terminates), env_factory
        self.hide_mission = bool(hide_mission)
        super().__init__(num_envs, **kw)
        n, dev, B = self.n, self.device, self.batch_size
        self.img_shape = OBS_KINDS[obs_kind]
        self._envs: list[dict[int, gym.Env]] = [{} for _ in range(n)]  # per slot: task index -> env (reused)
        self.task_index = torch.zeros(n, dtype=torch.int64, device=dev)
        self.layout_seed = torch.zeros(n, dtype=torch.int64, device=dev)
        self._img = np.zeros((n, *self.img_shape), dtype=np.uint8)
        self._mission = np.zeros((n, MISSION_LENGTH), dtype=np.int32)
        self._dir = np.zeros(n, dtype=np.int64)
        self._init_attempts(k_episodes)
        self.observation_spec = Composite(
            image=Bounded(0, 255, (*B, *self.img_shape), dtype=torch.uint8, device=dev),
            mission=Bounded(0, BABYAI_VOCAB_SIZE - 1, (*B, MISSION_LENGTH), dtype=torch.int32, device=dev),
            extra=Bounded(0.0, 2.0, (*B, 5), dtype=torch.float32, device=dev),
            **{TASK_ID_KEY: Categorical(len(self.task_names), (*B, 1), dtype=torch.int64, device=dev)},
            **episode_stats_spec(B, dev, success=True), shape=B, device=dev)

    def _env(self, i: int) -> gym.Env:
        t = int(self.task_index[i])
        env = self._envs[i].get(t)
        if env is None:
            limit = {} if self.max_steps is None else {"max_steps": self.max_steps}
            env = self._envs[i][t] = self.env_factory(self.task_names[t], **limit)
        return env

    def _image(self, raw) -> np.ndarray:
        img = np.asarray(raw, dtype=np.uint8)
        if img.shape == self.img_shape:
            return img
        if self.obs_kind == "full-image":  # the original resizes the whole-map render to 63x63
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
            x = torch.nn.functional.interpolate(x, size=self.img_shape[:2], mode="area")
            return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        h, w = min(img.shape[0], self.img_shape[0]), min(img.shape[1], self.img_shape[1])
        out = np.zeros(self.img_shape, dtype=np.uint8)  # full-grid: zero-pad (maps up to 22x22)
        out[:h, :w] = img[:h, :w, : self.img_shape[2]]
        return out

    def _show(self, i: int, obs: dict, new_attempt: bool = False) -> None:
        self._img[i] = self._image(obs["image"])
        self._dir[i] = int(obs["direction"])
        if new_attempt and not self.hide_mission:
            self._mission[i] = tokenize_mission(obs["mission"])

    def _start_attempt(self, i: int) -> None:
        obs, _ = self._env(i).reset(seed=int(self.layout_seed[i]))
        self._show(i, obs, True)
        self._ep_ret[i] = 0.0

    def _hard_reset(self, mask):
        ids = mask.nonzero().squeeze(-1)
        if len(ids):
            lo, hi = self.seed_range
            self.task_index[ids] = self._randint(len(self.task_names), len(ids))
            self.layout_seed[ids] = torch.randint(lo, hi + 1, (len(ids),), generator=self.rng, device=self.device)
        self._soft_reset(mask)

    def _obs(self):
        dev, n = self.device, self.n
        extra = np.zeros((n, 5), dtype=np.float32)
        extra[np.arange(n), self._dir % 4] = 1.0
        extra[:, 4] = (self._count + 1) / self.k_episodes
        t = lambda x: torch.from_numpy(x.copy()).to(dev)  # noqa: E731
        return {"image": t(self._img), "mission": t(self._mission), "extra": t(extra),
                TASK_ID_KEY: self.task_index.unsqueeze(-1).clone(), **self._attempt_stats(success=True)}

    def _slot_step(self, i: int, action: int):
        obs, r, term, trunc, _ = self._env(i).step(int(action))
        return obs, r, term or trunc, r > 0.0, bool(term) or self.timeout_terminates

    def current_tasks(self) -> list[str]:
        """Task name of every sub-env's current trial."""
        return [self.task_names[int(i)] for i in self.task_index]


def make_babyai_env(task_names: Sequence[str], num_envs: int, k_episodes: int = 2,
                    seed_range: tuple[int, int] = (0, 1_000_000), obs_kind: str = "partial-grid",
                    **kw) -> MultitaskMetaBabyAI:
    """``num_envs`` batched :class:`MultitaskMetaBabyAI` trials; wrap them with ``make_amago_env``."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    return MultitaskMetaBabyAI(task_names, num_envs, k_episodes=k_episodes, seed_range=seed_range,
                               obs_kind=obs_kind, **kw)
