"""Epsilon-greedy exploration modules: schedules, per-env multipliers, encodings, eval mode, collector storage."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.collectors import Collector
from torchrl.data import Binary, Bounded, Categorical, OneHot
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_amago.envs import BilevelEpsilonGreedy, EpsilonGreedy, TMaze, TMazeExploration, make_amago_env

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def td_of(action, time_idx, is_init=None):
    n = time_idx.shape[0]
    d = {"action": action, "time_idx": time_idx.view(n, 1)}
    if is_init is not None:
        d["is_init"] = is_init.view(n, 1)
    return TensorDict(d, batch_size=[n])


def test_epsilon_greedy_schedule_values():
    ex = EpsilonGreedy(OneHot(4), eps_start=1.0, eps_end=0.05, steps_anneal=100, randomize_eps=False)
    ls = torch.tensor([0, 7, 1000])
    assert ex.epsilon(ls, global_step=0).tolist() == pytest.approx([1.0] * 3)
    assert ex.epsilon(ls, global_step=50).tolist() == pytest.approx([0.525] * 3)  # 1 - 0.95/100*50
    assert ex.epsilon(ls, global_step=200).tolist() == pytest.approx([0.05] * 3)
    assert ex.epsilon(ls, multiplier=torch.tensor([0.5, 1.0, 0.0]), global_step=50).tolist() == \
        pytest.approx([0.2625, 0.525, 0.0])


def test_bilevel_schedule_values():
    ex = BilevelEpsilonGreedy(Categorical(3), rollout_horizon=10, steps_anneal=100)
    ls = torch.tensor([0, 5, 10])
    # g=0: ep_start 1.0, ep_end 0.8
    assert ex.epsilon(ls, global_step=0).tolist() == pytest.approx([1.0, 0.9, 0.8])
    # g=50: ep_start = 1 - 0.95*0.5 = 0.525, ep_end = 0.8 - 0.79*0.5 = 0.405
    assert ex.epsilon(ls, global_step=50).tolist() == pytest.approx([0.525, 0.465, 0.405])
    assert ex.epsilon(ls, global_step=10 ** 6).tolist() == pytest.approx([0.05, 0.03, 0.01])
    assert ex.trial_bounds(0) == pytest.approx((1.0, 0.8))


def test_tmaze_exploration_window_per_env():
    ex = TMazeExploration(OneHot(4), horizon=10, randomize_eps=False)
    ls = torch.arange(11)
    eps = ex.epsilon(ls, global_step=0)
    inside = [False] + [True] * 6 + [False] * 4  # 0 < l < 10 - 3
    assert eps.tolist() == pytest.approx([0.05 if i else 1.0 for i in inside])
    eps = ex.epsilon(ls, global_step=50_000)  # 1 - 0.99/1e5*5e4 = 0.505 outside the corridor
    assert eps.tolist() == pytest.approx([0.05 if i else 0.505 for i in inside])


def test_schedule_hook():
    ex = EpsilonGreedy(OneHot(2), randomize_eps=False, schedule_hook=lambda eps, l: torch.where(l > 2, 0.0, eps))
    assert ex.epsilon(torch.tensor([0, 3])).tolist() == [1.0, 0.0]


def test_discrete_random_actions_in_env_encoding():
    n = 4000
    for spec, action in [(OneHot(4), torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), 4)),
                         (Categorical(4), torch.zeros(n, dtype=torch.long))]:
        ex = EpsilonGreedy(spec, eps_start=1.0, eps_end=1.0, randomize_eps=False, seed=0)
        out = ex(td_of(action.clone(), torch.zeros(n, dtype=torch.long)))["action"]
        assert out.dtype == action.dtype and out.shape == action.shape
        idx = out.argmax(-1) if out.ndim == 2 else out
        if out.ndim == 2:
            assert (out.sum(-1) == 1).all()
        counts = torch.bincount(idx, minlength=4).float() / n
        assert ((counts - 0.25).abs() < 0.03).all()  # uniform over all actions
        ex0 = EpsilonGreedy(spec, eps_start=0.0, eps_end=0.0, randomize_eps=False)
        assert torch.equal(ex0(td_of(action.clone(), torch.zeros(n, dtype=torch.long)))["action"], action)


def test_discrete_replacement_rate_follows_eps():
    n = 20000
    ex = BilevelEpsilonGreedy(Categorical(2), rollout_horizon=10, eps_start_start=0.6, eps_end_start=0.2,
                              randomize_eps=False, seed=1)
    ls = torch.tensor([0, 10]).repeat(n // 2)
    out = ex(td_of(torch.zeros(n, dtype=torch.long), ls))["action"]
    # replaced with prob eps, and a replacement is action 1 half of the time
    assert out[ls == 0].float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert out[ls == 10].float().mean().item() == pytest.approx(0.1, abs=0.02)
    assert ex.global_step.item() == 1


def test_explored_marks_exactly_the_changed_discrete_actions():
    """`explored` is True where the stored action differs from the policy's: a random draw that lands on the policy's
    own action is not exploration. eps = 1: every action is redrawn, so ~3/4 of 4 actions differ."""
    n = 4000
    for spec, action in [(OneHot(4), torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), 4)),
                         (Categorical(4), torch.zeros(n, dtype=torch.long))]:
        for eps, share in ((1.0, 0.75), (0.0, 0.0)):
            ex = EpsilonGreedy(spec, eps_start=eps, eps_end=eps, randomize_eps=False, seed=0)
            out = ex(td_of(action.clone(), torch.zeros(n, dtype=torch.long)))
            explored = out["explored"]
            assert explored.shape == (n, 1) and explored.dtype == torch.bool
            changed = (out["action"] != action).reshape(n, -1).any(-1)
            assert torch.equal(explored[:, 0], changed)
            assert explored.float().mean().item() == pytest.approx(share, abs=0.03)


def test_explored_marks_noisy_continuous_actions_per_env():
    spec = Bounded(-1.0, 1.0, (2,))
    ex = EpsilonGreedy(spec, eps_start=0.3, eps_end=0.3, randomize_eps=False, seed=0,
                       schedule_hook=lambda eps, local_step: torch.where(local_step > 2, 0.0, eps))
    out = ex(td_of(torch.zeros(4, 2), torch.tensor([0, 1, 3, 5])))
    assert out["explored"][:, 0].tolist() == [True, True, False, False]
    assert (out["action"][2:] == 0).all() and (out["action"][:2] != 0).all()


def test_continuous_noise_and_clip():
    n = 20000
    spec = Bounded(-1.0, 1.0, (2,))
    ex = EpsilonGreedy(spec, eps_start=0.3, eps_end=0.3, randomize_eps=False, seed=0)
    out = ex(td_of(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long)))["action"]
    assert out.std().item() == pytest.approx(0.3, rel=0.05)
    out = ex(td_of(torch.full((n, 2), 0.9), torch.zeros(n, dtype=torch.long)))["action"]
    assert out.max().item() == 1.0 and (out == 1.0).float().mean() == pytest.approx(0.37, abs=0.03)


def test_multibinary_rejected():
    with pytest.raises(ValueError, match="multi-binary"):
        EpsilonGreedy(Binary(3))


def test_deterministic_mode_is_noise_free():
    n = 100
    ex = EpsilonGreedy(Categorical(5), randomize_eps=False)
    a = torch.zeros(n, dtype=torch.long)
    for et in (ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN):
        with set_exploration_type(et):
            assert torch.equal(ex(td_of(a.clone(), torch.zeros(n, dtype=torch.long)))["action"], a)
    assert ex.global_step.item() == 0
    with set_exploration_type(ExplorationType.RANDOM):
        assert not torch.equal(ex(td_of(a.clone(), torch.zeros(n, dtype=torch.long)))["action"], a)
    assert ex.global_step.item() == 1


def test_multipliers_redrawn_only_where_is_init_and_state_dict():
    n = 6
    ex = EpsilonGreedy(Categorical(3), seed=0)
    a, t = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    ex(td_of(a.clone(), t, torch.ones(n, dtype=torch.bool)))
    m0 = ex._mult.clone()
    assert ((m0 >= 0) & (m0 < 1)).all() and m0.unique().numel() == n
    init = torch.tensor([True, False, False, True, False, False])
    ex(td_of(a.clone(), t, init))
    assert torch.equal(ex._mult[~init], m0[~init]) and (ex._mult[init] != m0[init]).all()
    sd = ex.state_dict()
    assert sd["global_step"].item() == 2
    ex2 = EpsilonGreedy(Categorical(3))
    ex2.load_state_dict(sd)
    assert ex2.global_step.item() == 2 and ex2.trial_bounds() == ex.trial_bounds()


def test_missing_time_idx_is_a_clear_error():
    ex = EpsilonGreedy(Categorical(3))
    with pytest.raises(ValueError, match="time_idx"):
        ex(TensorDict(action=torch.zeros(2, dtype=torch.long), batch_size=[2]))


def test_collector_stores_executed_noisy_action():
    env = make_amago_env(TMaze(4, corridor_length=3, seed=0))
    always_right = TensorDictModule(
        lambda obs: torch.nn.functional.one_hot(torch.zeros(obs.shape[:-1], dtype=torch.long), 4),
        in_keys=["observation"], out_keys=["action"])
    explore = EpsilonGreedy(env.action_spec, eps_start=1.0, eps_end=1.0, randomize_eps=False, seed=0)
    policy = TensorDictSequential(always_right, explore)
    c = Collector(env, policy, frames_per_batch=4 * 25, total_frames=4 * 25)
    d = next(iter(c))
    c.shutdown()
    a = d["action"].argmax(-1)
    assert (a != 0).float().mean() > 0.5  # the noisy action is stored, not the policy's "right"
    assert torch.equal(d["next", "prev_action"], d["action"].float())  # and it is what the env executed
    assert explore.global_step.item() in (25, 26)  # one call per batched step (+1: the collector probes the policy)
    assert torch.equal(d["explored"][..., 0], a != 0)  # stored beside it: where the action is not the policy's
