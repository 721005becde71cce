"""JaxBatchedEnv: a batch of functional envs as one TorchRL env, auto-reset inside the step, TorchRL partial resets.

Everything but the last tests runs on the numpy backend with a numpy stand-in functional env (no jax needed); the
jax tests skip when jax is missing.
"""

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, OneHot, Unbounded
from torchrl.envs.utils import check_env_specs

from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.checks import check_amago_env
from torchrl_amago.envs.libs.jax_bridge import ArraySpec, JaxBatchedEnv, NumpyBackend, batched_functions
from tests.missing_package import assert_missing_package_named


class Countdown:
    """Numpy stand-in: a hidden target in {0, 1, 2}; reward 1 when the action hits it; terminates after
    2 + target steps; truncates after `limit` steps. Obs: [t, target] and a bool flag (t == 0)."""

    def __init__(self, xp=np, limit=100):
        self.xp, self.limit, self.resets = xp, limit, 0
        self.observation_specs = {"obs": ArraySpec((2,), "float32"), "first": ArraySpec((1,), "bool"),
                                  "count": ArraySpec((1,), "int32", 0, 1000)}
        self.action_spec = ArraySpec((), "int32", n=3)

    def _obs(self, t, target):
        xp = self.xp
        return {"obs": xp.stack([xp.asarray(t, dtype=xp.float32), xp.asarray(target, dtype=xp.float32)]),
                "first": xp.reshape(xp.asarray(t == 0), (1,)), "count": xp.reshape(xp.asarray(t, dtype=xp.int32), (1,))}

    def reset(self, key):
        self.resets += 1
        target = np.random.default_rng(int(key)).integers(0, 3)
        state = {"t": np.int32(0), "target": np.int32(target)}
        return self._obs(state["t"], state["target"]), state

    def step(self, key, state, action):
        t = state["t"] + 1
        reward = np.float32(action == state["target"])
        term = np.asarray(t >= 2 + state["target"])
        trunc = np.asarray(t >= self.limit) & ~term
        new = {"t": np.int32(t), "target": state["target"]}
        return self._obs(new["t"], new["target"]), new, reward, term, trunc


def _env(n=3, **kw):
    return JaxBatchedEnv(Countdown(**{k: v for k, v in kw.items() if k == "limit"}), n, backend="numpy",
                         **{k: v for k, v in kw.items() if k != "limit"})


def _act(env, idx):
    return TensorDict({"action": torch.nn.functional.one_hot(torch.as_tensor(idx), 3).long()}, batch_size=[env.num_envs])


def test_specs_follow_the_functional_env():
    env = _env(3)
    spec = env.observation_spec
    assert isinstance(spec["obs"], Unbounded) and spec["obs"].shape == (3, 2) and spec["obs"].dtype == torch.float32
    assert isinstance(spec["first"], Categorical) and spec["first"].dtype == torch.bool
    assert isinstance(spec["count"], Bounded) and spec["count"].dtype == torch.int64  # int32 crosses as int64
    assert isinstance(env.action_spec, OneHot) and env.action_spec.shape == (3, 3)
    cat = _env(2, categorical_action_encoding=True)
    assert isinstance(cat.action_spec, Categorical) and cat.action_spec.shape == (2,)
    check_env_specs(env)
    check_env_specs(cat)


def test_step_shows_the_true_last_obs_and_reset_picks_up_the_in_step_reset():
    env = _env(3, seed=0)
    td = env.reset()
    targets = td["obs"][:, 1].long()
    assert torch.equal(td["obs"][:, 0], torch.zeros(3)) and td["first"].all()
    t = 0
    while True:
        out = env.step(td.update(_act(env, torch.zeros(3, dtype=torch.long))))
        t += 1
        nxt = out["next"]
        done = nxt["done"].squeeze(-1)
        assert torch.equal(done, t >= 2 + targets)  # per-slot episode length 2 + target
        assert torch.equal(nxt["reward"].squeeze(-1), (targets == 0).float())
        if done.any():
            break
        td = nxt.clone()
    # the step that ended an episode shows its last observation (t = 2 + target), not the next episode's first
    assert torch.equal(nxt["obs"][done, 0], (2 + targets[done]).float())
    calls = env.fenv.resets
    reset = env.reset(nxt.clone().set("_reset", done.unsqueeze(-1)))
    assert env.fenv.resets == calls  # the finished slots were already reset inside the step: no new env call
    assert torch.equal(reset["obs"][done, 0], torch.zeros(int(done.sum())))
    assert reset["first"][done].all()
    # slots outside the mask keep their state
    assert torch.equal(reset["obs"][~done], nxt["obs"][~done])


def test_partial_reset_of_running_slots_is_a_real_reset_and_leaves_the_others():
    env = _env(4, seed=1)
    td = env.reset()
    for _ in range(1):
        td = env.step(td.update(_act(env, torch.ones(4, dtype=torch.long))))["next"].clone()
    assert not td["done"].any() and torch.equal(td["obs"][:, 0], torch.ones(4))
    mask = torch.tensor([True, False, True, False])
    calls = env.fenv.resets
    out = env.reset(td.clone().set("_reset", mask.unsqueeze(-1)))
    assert env.fenv.resets > calls  # running slots need a real reset
    assert torch.equal(out["obs"][:, 0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert torch.equal(out["obs"][~mask], td["obs"][~mask])
    # the next step continues the kept slots from t=1 and the reset slots from t=0
    nxt = env.step(out.update(_act(env, torch.zeros(4, dtype=torch.long))))["next"]
    assert torch.equal(nxt["obs"][:, 0], torch.tensor([1.0, 2.0, 1.0, 2.0]))


def test_truncation_is_reported_separately():
    env = _env(2, limit=1)  # every episode is cut after one step unless it terminated first
    td = env.reset()
    nxt = env.step(td.update(_act(env, torch.zeros(2, dtype=torch.long))))["next"]
    assert nxt["truncated"].all() and not nxt["terminated"].any() and nxt["done"].all()


def test_seeding_is_reproducible():
    def targets(seed):
        env = _env(8)
        env.set_seed(seed)
        return env.reset()["obs"][:, 1]

    assert torch.equal(targets(3), targets(3))
    assert not torch.equal(targets(3), targets(4))


def test_rollout_auto_resets_and_full_stack_passes_the_amago_checks():
    env = _env(3, seed=0)
    ro = env.rollout(30, break_when_any_done=False)
    # after every done the next root observation is a fresh episode (t = 0)
    done = ro["next", "done"].squeeze(-1)[:, :-1]
    assert done.any()
    assert torch.equal(ro["obs"][:, 1:, 0][done], torch.zeros(int(done.sum())))
    data = check_amago_env(make_amago_env(_env(3, seed=0)), steps_per_env=20)
    assert data["next", "done"].any() and data["is_init"][:, 1:][data["next", "done"][:, :-1]].all()


def test_continuous_actions_reach_the_env():
    class Box(Countdown):
        def __init__(self):
            super().__init__()
            self.action_spec = ArraySpec((2,), "float32", -1.0, 1.0)
            self.seen = []

        def step(self, key, state, action):
            self.seen.append(np.asarray(action).copy())
            return super().step(key, state, np.int32(0))

    env = JaxBatchedEnv(Box(), 2, backend="numpy")
    assert isinstance(env.action_spec, Bounded) and env.action_spec.shape == (2, 2)
    td = env.reset()
    td["action"] = torch.tensor([[0.5, -0.5], [1.0, 0.0]])
    env.step(td)
    np.testing.assert_allclose(np.stack(env.fenv.seen), [[0.5, -0.5], [1.0, 0.0]])


def test_numpy_backend_vmap_and_batched_functions():
    be = NumpyBackend()
    reset_all, reset_where, step = batched_functions(Countdown(), 3, be)
    key, obs, state = reset_all(be.key(0))
    assert obs["obs"].shape == (3, 2) and state["t"].shape == (3,)
    key2, obs2, state2 = reset_where(key, obs, state, np.array([False, True, False]))
    np.testing.assert_array_equal(obs2["obs"][[0, 2]], obs["obs"][[0, 2]])
    out = step(key2, state2, np.zeros(3, dtype=np.int32))
    assert len(out) == 7 and out[1]["obs"][:, 0].tolist() == [1.0, 1.0, 1.0]


def test_missing_jax_names_the_pip_package(monkeypatch):
    # backend="jax" is the default
    assert_missing_package_named(monkeypatch, "jax", "pip install jax", lambda: JaxBatchedEnv(Countdown(), 2))


# ------------------------------------------------------------------------------------------------ with jax
class JaxCountdown:
    """The same stand-in written with jax.numpy."""

    def __init__(self):
        self.observation_specs = {"obs": ArraySpec((2,), "float32"), "first": ArraySpec((1,), "bool")}
        self.action_spec = ArraySpec((), "int32", n=3)

    def reset(self, key):
        import jax
        import jax.numpy as jnp

        target = jax.random.randint(key, (), 0, 3)
        state = {"t": jnp.int32(0), "target": target}
        return {"obs": jnp.stack([0.0, target.astype(jnp.float32)]), "first": jnp.ones(1, bool)}, state

    def step(self, key, state, action):
        import jax.numpy as jnp

        t = state["t"] + 1
        term = t >= 2 + state["target"]
        obs = {"obs": jnp.stack([t.astype(jnp.float32), state["target"].astype(jnp.float32)]),
               "first": jnp.zeros(1, bool)}
        return obs, {"t": t, "target": state["target"]}, (action == state["target"]).astype(jnp.float32), term, \
            jnp.zeros((), bool)


def test_jax_backend_auto_reset_and_specs():
    pytest.importorskip("jax")
    env = JaxBatchedEnv(JaxCountdown(), 4, seed=0)
    check_env_specs(env)
    ro = env.rollout(12, break_when_any_done=False)
    targets = ro["obs"][:, 0, 1].long()
    first_done = ro["next", "done"].squeeze(-1).float().argmax(1)
    assert torch.equal(first_done, 1 + targets)  # episode length 2 + target
    for i in range(4):
        t = int(first_done[i])
        assert ro["next", "obs"][i, t, 0] == 2 + targets[i]  # true last obs
        assert ro["obs"][i, t + 1, 0] == 0 and ro["first"][i, t + 1]  # then the in-step reset
    assert torch.equal(ro["next", "reward"].squeeze(-1)[:, 0], (targets == ro["action"][:, 0].argmax(-1)).float())
    check_amago_env(make_amago_env(JaxBatchedEnv(JaxCountdown(), 3, seed=1)), steps_per_env=10)
