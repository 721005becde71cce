"""XLand-MiniGrid (JAX) meta-RL as one batched TorchRL env, like AMAGO's ``XLandMinigridVectorizedGym``: ``k_episodes``
episodes per ruleset, run inside the jitted step (docs/domains/xland_minigrid.md). ``pip install xminigrid``."""
from __future__ import annotations

from ..._optional import require
from .jax_bridge import ArraySpec, JaxBatchedEnv, make_backend

_FEATURE = "XLand-MiniGrid (torchrl_amago.envs.libs.xland)"
LOCAL_BENCHMARKS = ("local-trivial", "local-hidden-rule", "local-one-pick")
_PICKABLE = (3, 4, 5, 7, 11, 12)  # ball, square, pyramid, key, hex, star
_NUM_COLORS = 11  # colors 1..11 (0 is "empty")


def _xminigrid():
    require("jax", "jax", _FEATURE)
    return require("xminigrid", "xminigrid", _FEATURE)


def xland_benchmark_names() -> list[str]:
    """Official benchmark names (downloaded on first use) plus the local procedural ones."""
    return list(_xminigrid().registered_benchmarks()) + list(LOCAL_BENCHMARKS)


def local_ruleset_sampler(kind: str, num_distractors: int = 2):
    """``key -> RuleSet`` for the procedural rulesets (jit/vmap friendly; distinct pickable (tile, color) objects)."""
    import jax
    import jax.numpy as jnp
    from xminigrid.types import RuleSet

    if kind not in LOCAL_BENCHMARKS:
        raise ValueError(f"unknown local ruleset kind {kind!r}; choose one of {LOCAL_BENCHMARKS}")
    if not isinstance(num_distractors, int) or num_distractors < 0:
        raise ValueError(f"num_distractors must be an int >= 0, got {num_distractors!r}")
    pickable = jnp.asarray(_PICKABLE, dtype=jnp.uint8)
    n_obj = 1 + num_distractors

    def sample(key):
        idx = jax.random.choice(key, len(_PICKABLE) * _NUM_COLORS, shape=(n_obj + 1,), replace=False)
        objs = jnp.stack([pickable[idx // _NUM_COLORS], (1 + idx % _NUM_COLORS).astype(jnp.uint8)], -1)
        target = objs[0] if kind == "local-trivial" else objs[-1]  # hidden rule (both other kinds): not on the floor
        goal = jnp.zeros(5, dtype=jnp.uint8).at[0].set(1).at[1:3].set(target)  # AgentHoldGoal(target)
        rule = jnp.zeros((1, 7), dtype=jnp.uint8)
        if kind != "local-trivial":  # AgentHoldRule(objs[0] -> target)
            rule = rule.at[0, 0].set(1).at[0, 1:3].set(objs[0]).at[0, 3:5].set(target)
        return RuleSet(goal=goal, rules=rule, init_tiles=objs[:n_obj])

    return sample


class XLandTrialEnv:
    """One XLand-MiniGrid slot as a functional env of k-episode trials on one ruleset (:meth:`from_xminigrid`).
    ``episode_success``: the episode ended with a reward (XLand rewards only reaching the goal). ``end_on_pick``: an
    episode also ends when the agent picks up anything (the ``local-one-pick`` rulesets: a wrong pick is final)."""

    def __init__(self, env, params, sample_ruleset, k_episodes: int, *, backend="jax", goal_len: int = 5,
                 end_on_pick: bool = False):
        if not isinstance(k_episodes, int) or k_episodes < 1:
            raise ValueError(f"k_episodes must be a positive int, got {k_episodes!r}")
        if params.max_steps is None:
            raise ValueError("XLand params.max_steps must be set (XLand's default_params sets 3 * height * width)")
        self.env, self.params, self.sample_ruleset, self.k_episodes = env, params, sample_ruleset, k_episodes
        self.end_on_pick = bool(end_on_pick)
        self.be = make_backend(backend, "cpu", _FEATURE)
        self.max_steps = int(params.max_steps)
        v = int(params.view_size)
        self.observation_specs = {
            "grid": ArraySpec((v, v, 2), "uint8", 0, 14), "direction": ArraySpec((4,), "uint8", 0, 1),
            "goal": ArraySpec((goal_len,), "uint8", 0, 14), "soft_reset": ArraySpec((1,), "float32"),
            "episode_end": ArraySpec((1,), "bool"), "episode_return": ArraySpec((1,), "float32"),
            "episode_count": ArraySpec((1,), "int32"), "episode_success": ArraySpec((1,), "bool")}
        self.action_spec = ArraySpec((), "int32", n=int(env.num_actions(params)))

    @classmethod
    def from_xminigrid(cls, k_episodes: int = 25, rooms: int = 4, grid_size: int = 13,
                       ruleset_benchmark: str = "small-1m", train_test_split: str = "train",
                       train_test_split_key: int = 0, train_test_split_pct: float = 0.8, max_steps: int | None = None,
                       view_size: int = 5, num_distractors: int = 2) -> "XLandTrialEnv":
        """Built like the original ``XLandMinigridVectorizedGym`` (``max_steps`` default ``3 * grid_size**2``)."""
        xminigrid = _xminigrid()
        import jax
        from xminigrid.envs.xland import XLandMiniGrid

        if rooms not in (1, 2, 4, 6, 9):
            raise ValueError(f"rooms must be one of 1, 2, 4, 6, 9 (XLand layouts), got {rooms!r}")
        if train_test_split not in ("train", "test"):
            raise ValueError(f"train_test_split must be 'train' or 'test', got {train_test_split!r}")
        env = XLandMiniGrid()
        params = env.default_params(grid_type=f"R{rooms}", height=grid_size, width=grid_size, view_size=view_size)
        if max_steps is not None:
            params = params.replace(max_steps=int(max_steps))
        if ruleset_benchmark in LOCAL_BENCHMARKS:
            sample = local_ruleset_sampler(ruleset_benchmark, num_distractors)
        elif ruleset_benchmark in xminigrid.registered_benchmarks():
            try:
                bench = xminigrid.load_benchmark(name=ruleset_benchmark)
            except OSError as e:  # urllib errors are OSErrors
                raise RuntimeError(
                    f"could not load XLand benchmark {ruleset_benchmark!r} ({e}); xminigrid downloads it once from "
                    f"huggingface into $XLAND_MINIGRID_DATA (default ~/.xland_minigrid). Without internet, copy the "
                    f"file there, or use a local ruleset: {LOCAL_BENCHMARKS}") from e
            train, test = bench.shuffle(key=jax.random.PRNGKey(train_test_split_key)).split(prop=train_test_split_pct)
            sample = (train if train_test_split == "train" else test).sample_ruleset
        else:
            raise ValueError(f"unknown ruleset_benchmark {ruleset_benchmark!r}; choose one of "
                             f"{list(xminigrid.registered_benchmarks()) + list(LOCAL_BENCHMARKS)}")
        out = cls(env, params, sample, k_episodes, backend="jax", end_on_pick=ruleset_benchmark == "local-one-pick")
        out.rooms, out.grid_size, out.ruleset_benchmark = rooms, grid_size, ruleset_benchmark
        return out

    @property
    def suggested_max_seq_len(self) -> int:
        return (self.max_steps + 1) * self.k_episodes

    def _params(self, ruleset):
        return self.params.replace(ruleset=ruleset)

    def _obs(self, ts, first, end, ret, count):
        xp = self.be.xp
        return {"grid": xp.asarray(ts.observation).astype(xp.uint8),
                "direction": self.be.one_hot(ts.state.agent.direction, 4, xp.uint8),
                "goal": xp.asarray(ts.state.goal_encoding).astype(xp.uint8),
                "soft_reset": xp.asarray(first, dtype=xp.float32).reshape(1),
                "episode_end": xp.asarray(end, dtype=bool).reshape(1),
                "episode_return": xp.asarray(ret, dtype=xp.float32).reshape(1),
                "episode_count": xp.asarray(count, dtype=xp.int32).reshape(1),
                "episode_success": (xp.asarray(end, dtype=bool) & (xp.asarray(ret) > 0)).reshape(1)}

    def reset(self, key):
        xp = self.be.xp
        k_rules, k_reset = self.be.split(key, 2)
        ruleset = self.sample_ruleset(k_rules)
        ts = self.env.reset(self._params(ruleset), k_reset)
        state = {"ts": ts, "ruleset": ruleset, "count": xp.int32(0), "ret": xp.float32(0.0)}
        return self._obs(ts, True, False, 0.0, 0), state

    def step(self, key, state, action):
        xp = self.be.xp
        params = self._params(state["ruleset"])
        ts = self.env.step(params, state["ts"], action)
        reward = xp.asarray(ts.reward, dtype=xp.float32)
        ep_end = xp.asarray(ts.last(), dtype=bool)
        if self.end_on_pick:  # the pocket holds something: a pick-up happened (XLand's empty pocket is (0, 0))
            ep_end = ep_end | (xp.asarray(ts.state.agent.pocket) != 0).any()
        ep_ret = state["ret"] + reward
        count = state["count"] + ep_end.astype(xp.int32)
        trial_end = count >= self.k_episodes
        soft = ep_end & ~trial_end
        fresh = self.env.reset(params, key)  # next attempt: new layout, same ruleset (same-step soft reset)
        ts = self.be.tree_map(lambda new, old: xp.where(soft, new, old), fresh, ts)
        new_state = {"ts": ts, "ruleset": state["ruleset"], "count": count,
                     "ret": xp.where(ep_end, xp.float32(0.0), ep_ret).astype(xp.float32)}
        obs = self._obs(ts, soft, ep_end, xp.where(ep_end, ep_ret, 0.0), count)
        return obs, new_state, reward, trial_end, xp.zeros((), dtype=bool)


def make_xland_env(num_envs: int, *, k_episodes: int = 25, rooms: int = 4, grid_size: int = 13,
                   ruleset_benchmark: str = "small-1m", train_test_split: str = "train", train_test_split_key: int = 0,
                   train_test_split_pct: float = 0.8, max_steps: int | None = None, view_size: int = 5,
                   num_distractors: int = 2, categorical_action_encoding: bool = False, device="cpu",
                   seed: int | None = None) -> JaxBatchedEnv:
    """``num_envs`` XLand-MiniGrid trial slots as one TorchRL env (``env.fenv``: the functional env)."""
    fenv = XLandTrialEnv.from_xminigrid(
        k_episodes=k_episodes, rooms=rooms, grid_size=grid_size, ruleset_benchmark=ruleset_benchmark,
        train_test_split=train_test_split, train_test_split_key=train_test_split_key,
        train_test_split_pct=train_test_split_pct, max_steps=max_steps, view_size=view_size,
        num_distractors=num_distractors)
    return JaxBatchedEnv(fenv, num_envs, backend="jax", categorical_action_encoding=categorical_action_encoding,
                         device=device, seed=seed)
