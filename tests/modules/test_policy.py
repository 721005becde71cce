"""AMAGOPolicy: acts through a TorchRL Collector on a batched env, valid actions for OneHot / Categorical /
Bounded specs, deterministic mode, per-env state cleared at is_init, fresh_copy semantics."""
from __future__ import annotations

import warnings

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import Collector
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase, InitTracker, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_amago.modules.heads import ActorHead
from torchrl_amago.modules.policy import AMAGOPolicy
from torchrl_amago.modules.timestep import MLPTimestepEncoder
from torchrl_amago.modules.trajectory import make_trajectory_encoder
from torchrl_amago.spaces import action_space_from_spec

OBS = 3


class ToyEnv(EnvBase):
    """Batched toy env that writes AMAGO's bookkeeping keys itself (prev_action, prev_reward, time_idx);
    trials end after a random horizon in [2, 5], so partial resets happen inside a collector batch."""

    batch_locked = True

    def __init__(self, num_envs: int = 4, kind: str = "categorical", n_actions: int = 3):
        super().__init__(batch_size=torch.Size([num_envs]) if num_envs else torch.Size([]))
        B = self.batch_size
        self.kind, self.n_actions = kind, n_actions
        if kind == "onehot":
            self.action_spec = OneHot(n_actions, shape=(*B, n_actions))
        elif kind == "categorical":
            self.action_spec = Categorical(n_actions, shape=B, dtype=torch.int64)
        else:
            self.action_spec = Bounded(-1.0, 1.0, shape=(*B, n_actions))
        self.observation_spec = Composite(
            observation=Unbounded((*B, OBS)), prev_action=Unbounded((*B, n_actions)),
            prev_reward=Unbounded((*B, 1)), time_idx=Unbounded((*B, 1), dtype=torch.int64), shape=B)
        self.reward_spec = Unbounded((*B, 1))
        self.done_spec = Composite(done=Categorical(2, (*B, 1), dtype=torch.bool),
                                   terminated=Categorical(2, (*B, 1), dtype=torch.bool),
                                   truncated=Categorical(2, (*B, 1), dtype=torch.bool), shape=B)
        self.t = torch.zeros(B, dtype=torch.long)
        self.horizon = torch.full(B, 3, dtype=torch.long)

    def _features(self, action):
        if self.kind == "onehot":
            return action.float()
        if self.kind == "categorical":
            return torch.nn.functional.one_hot(action, self.n_actions).float()
        return action.float()

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        B = self.batch_size
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict["_reset"].reshape(B)
        else:
            mask = torch.ones(B, dtype=torch.bool)
        self.t = torch.where(mask, 0, self.t)
        self.horizon = torch.where(mask, torch.randint(2, 6, B), self.horizon)
        return TensorDict(observation=torch.randn(*B, OBS), prev_action=torch.zeros(*B, self.n_actions),
                          prev_reward=torch.zeros(*B, 1), time_idx=self.t.unsqueeze(-1).clone(), batch_size=B)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        a = self._features(tensordict["action"])
        r = a.sum(-1, keepdim=True)
        self.t = self.t + 1
        done = (self.t >= self.horizon).unsqueeze(-1)
        return TensorDict(observation=torch.randn(*self.batch_size, OBS), prev_action=a, prev_reward=r,
                          time_idx=self.t.unsqueeze(-1).clone(), reward=r, done=done.clone(),
                          terminated=torch.zeros_like(done), truncated=done, batch_size=self.batch_size)

    def _set_seed(self, seed):
        torch.manual_seed(seed)


def make_env(num_envs=4, kind="categorical"):
    return TransformedEnv(ToyEnv(num_envs, kind), InitTracker())


def make_policy(env, encoder="transformer", max_seq_len=8):
    torch.manual_seed(0)
    space = action_space_from_spec(env.action_spec)
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=16, d_output=12)
    traj = make_trajectory_encoder(encoder, tstep.emb_dim, max_seq_len, d_model=16, n_layers=2,
                                   **({"n_heads": 2} if encoder == "transformer" else {}))
    head = ActorHead(traj.emb_dim, space, num_gammas=3, d_hidden=16)
    return AMAGOPolicy(tstep, traj, head, space)


@pytest.mark.parametrize("kind", ["onehot", "categorical", "bounded"])
@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_collector_actions_are_valid(kind, encoder):
    env = make_env(4, kind)
    policy = make_policy(env, encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coll = Collector(env, policy, frames_per_batch=40, total_frames=80)
        batches = list(coll)
        coll.shutdown()
    for data in batches:
        assert data.batch_size == (4, 10)
        assert data["is_init"].any() and data["next", "done"].any()  # resets really happen mid-batch
        for t in range(data.shape[1]):
            assert env.action_spec.is_in(data["action"][:, t]), data["action"][:, t]
        assert "tstep_emb" not in data.keys()  # the policy does not pollute the stored data
    if kind == "categorical":
        assert batches[0]["action"].dtype == torch.int64 and batches[0]["action"].shape == (4, 10)
    elif kind == "onehot":
        assert (batches[0]["action"].sum(-1) == 1).all()
    else:
        assert batches[0]["action"].dtype == torch.float32 and batches[0]["action"].shape == (4, 10, 3)


def _inputs(env, steps, seed=0):
    """A fixed list of per-step root tensordicts for the policy (random obs, is_init at t=0 and t=4 for env 0)."""
    g = torch.Generator().manual_seed(seed)
    n, A = env.batch_size[0], env.action_spec.shape[-1] if env.action_spec.ndim > 1 else env.base_env.n_actions
    tds, t_idx = [], torch.zeros(n, 1, dtype=torch.long)
    for t in range(steps):
        init = torch.zeros(n, 1, dtype=torch.bool)
        if t == 0:
            init[:] = True
        if t == 4:
            init[0] = True
        t_idx = torch.where(init, 0, t_idx + (t > 0))
        tds.append(TensorDict(observation=torch.randn(n, OBS, generator=g), prev_action=torch.rand(n, A, generator=g),
                              prev_reward=torch.randn(n, 1, generator=g), time_idx=t_idx.clone(), is_init=init,
                              batch_size=[n]))
    return tds


@pytest.mark.parametrize("encoder", ["transformer", "gru", "lstm"])
def test_state_cleared_at_is_init(encoder):
    env = make_env(3, "bounded")
    policy = make_policy(env, encoder)
    tds = _inputs(env, 8)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        acts = [policy(td.clone())["action"] for td in tds]
        # a fresh policy started at the reset (step 4) sees only the post-reset inputs
        fresh = policy.fresh_copy()
        first = tds[4].clone()
        first["is_init"][:] = True
        fresh_acts = [fresh(first)["action"]] + [fresh(td.clone())["action"] for td in tds[5:]]
    for a, f in zip(acts[4:], fresh_acts):
        torch.testing.assert_close(a[0], f[0], atol=1e-5, rtol=0)   # env 0 was reset: same as fresh
    # env 1 was not reset: its context (steps 0..3) changes its actions, so the comparison above can fail
    assert max((a[1] - f[1]).abs().max().item() for a, f in zip(acts[5:], fresh_acts[1:])) > 1e-4


def test_deterministic_mode_is_deterministic_and_random_mode_samples():
    env = make_env(5, "categorical")
    policy = make_policy(env, "transformer")
    tds = _inputs(env, 6)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        a1 = [policy(td.clone())["action"] for td in tds]
        policy.reset_state()
        torch.manual_seed(123)
        a2 = [policy(td.clone())["action"] for td in tds]
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    # sampling (RANDOM): with 30 envs x 6 steps some sampled actions differ between two seeds
    env = make_env(30, "categorical")
    policy = make_policy(env, "transformer")
    tds = _inputs(env, 6)
    outs = []
    for seed in (1, 2):
        policy.reset_state()
        torch.manual_seed(seed)
        with set_exploration_type(ExplorationType.RANDOM):
            outs.append(torch.stack([policy(td.clone())["action"] for td in tds]))
    assert not torch.equal(outs[0], outs[1])
    for mode in (ExplorationType.MODE, ExplorationType.MEAN):  # all deterministic modes agree
        policy.reset_state()
        with set_exploration_type(mode):
            m = torch.stack([policy(td.clone())["action"] for td in tds])
        policy.reset_state()
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            d = torch.stack([policy(td.clone())["action"] for td in tds])
        assert torch.equal(m, d)


def test_fresh_copy_shares_weights_not_state_and_state_dict_is_the_three_modules():
    env = make_env(2, "onehot")
    policy = make_policy(env, "transformer")
    copy = policy.fresh_copy()
    assert copy.timestep_encoder is policy.timestep_encoder and copy.actor_head is policy.actor_head
    assert copy.trajectory_encoder is policy.trajectory_encoder
    tds = _inputs(env, 3)
    for td in tds:
        policy(td.clone())
    assert policy.state is not None and copy.state is None
    lengths = policy.state.lengths.clone()
    copy(tds[0].clone())
    assert torch.equal(policy.state.lengths, lengths) and copy.state.lengths.tolist() == [1, 1]
    # weights are shared: changing one changes the other
    with torch.no_grad():
        next(policy.actor_head.parameters()).add_(1.0)
    assert torch.equal(next(copy.actor_head.parameters()), next(policy.actor_head.parameters()))
    sd = policy.state_dict()
    expected = {f"timestep_encoder.{k}" for k in policy.timestep_encoder.state_dict()}
    expected |= {f"trajectory_encoder.{k}" for k in policy.trajectory_encoder.state_dict()}
    expected |= {f"actor_head.{k}" for k in policy.actor_head.state_dict()}
    assert set(sd) == expected
    policy.reset_state()
    assert policy.state is None


def test_policy_acts_in_eval_mode_and_restores_train_mode():
    env = make_env(2, "categorical")
    policy = make_policy(env, "transformer")
    policy.train()
    norm = policy.timestep_encoder.in_norm
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    for td in _inputs(env, 3):
        policy(td.clone())
    assert all(torch.equal(before[k], v) for k, v in norm.state_dict().items())  # no stats update while acting
    assert policy.trajectory_encoder.training and policy.timestep_encoder.training


def test_unbatched_env_and_changing_n_envs():
    env = make_env(0, "categorical")
    policy = make_policy(env, "gru")
    td = env.reset()
    out = policy(td)
    assert out["action"].shape == () and env.action_spec.is_in(out["action"])
    ro = env.rollout(7, policy, break_when_any_done=False)
    assert ro.batch_size == (7,) and ro["is_init"].sum() >= 2
    # switching to 3 envs reallocates the state
    out = policy(_inputs(make_env(3, "categorical"), 1)[0])
    assert out["action"].shape == (3,) and policy.state.shape[1] == 3


def test_missing_keys_raise_clear_errors():
    env = make_env(2, "categorical")
    policy = make_policy(env, "gru")
    td = _inputs(env, 1)[0]
    with pytest.raises(KeyError, match="is_init"):
        policy(td.clone().exclude("is_init"))
    with pytest.raises(KeyError, match="time_idx"):
        policy(td.clone().exclude("time_idx"))


def test_params_key_writes_the_actor_outputs_opt_in():
    env = make_env(3, "categorical")
    policy = make_policy(env, "transformer")
    tds = _inputs(env, 4)
    assert policy.out_keys == ["action"] and "actor_params" not in policy(tds[0].clone()).keys()  # default off
    policy.reset_state()
    logging_policy = AMAGOPolicy(policy.timestep_encoder, policy.trajectory_encoder, policy.actor_head,
                                 policy.action_space, params_key="actor_params")
    assert logging_policy.out_keys == ["action", "actor_params"]
    assert logging_policy.fresh_copy().params_key == "actor_params"
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for td in tds:
            plain = policy(td.clone())
            out = logging_policy(td.clone())
            assert torch.equal(out["action"], plain["action"])  # writing the params changes no action
            params = out["actor_params"]
            assert params.shape == (3, 3, 3)  # [N, gammas, actions]
            # the acting gamma is the last one: the greedy action is the argmax of its logits
            assert torch.equal(params[:, -1].argmax(-1), out["action"])
