"""PrevActionReward / ActionCounts / EpisodeTime / MetaTrial / make_amago_env: specs, collector alignment, trial structure."""

import pytest
import torch
from torchrl.envs import GymEnv, TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_amago.envs import (ActionCounts, DarkKeyDoor, EpisodeTime, MetaFrozenLake, MetaTrial, PrevActionReward,
                                TMaze, make_amago_env)
from torchrl_amago.envs.transforms import add_action_counts
from torchrl_amago.envs.checks import check_alignment, check_amago_env, collect_batch

from .toy_env import ToyTaskEnv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


collect = collect_batch


@pytest.mark.parametrize("make", [
    lambda: make_amago_env(TMaze(4, corridor_length=3, seed=0)),
    lambda: make_amago_env(TMaze(4, corridor_length=3, seed=0, categorical_action_encoding=True)),
    lambda: make_amago_env(MetaFrozenLake(5, size=3, k_episodes=2, seed=0)),
    lambda: make_amago_env(DarkKeyDoor(3, size=3, max_episode_steps=4, meta_horizon=15, seed=0)),
    lambda: make_amago_env(ToyTaskEnv(3), k_episodes=3, reset_mode="dummy_step"),
    lambda: make_amago_env(ToyTaskEnv(3, terminate=False), k_episodes=2, horizon=7),
    lambda: make_amago_env(GymEnv("Pendulum-v1"), max_steps=9),
])
def test_collector_alignment(make):
    d = check_amago_env(make())
    assert d["next", "done"].any()


def test_prev_action_reward_partial_reset_keeps_other_envs():
    env = make_amago_env(TMaze(3, corridor_length=2, seed=0, categorical_action_encoding=True))
    td = env.reset()
    td["action"] = torch.tensor([1, 2, 3])
    td = env.step(td)["next"]
    td.set("_reset", torch.tensor([[False], [True], [False]]))
    td2 = env.reset(td)  # the input holds the current step: only env 1 is overwritten
    assert td2["prev_action"].argmax(-1).tolist()[0::2] == [1, 3]
    assert (td2["prev_action"][1] == 0).all() and td2["time_idx"].squeeze(-1).tolist() == [1, 0, 1]
    assert td2["is_init"].squeeze(-1).tolist() == [False, True, False]


def test_prev_action_reward_continuous_and_explicit_spec():
    env = TransformedEnv(GymEnv("Pendulum-v1"), PrevActionReward(GymEnv("Pendulum-v1").action_spec))
    td = env.rand_step(env.reset())
    assert td["next", "prev_action"].shape == (1,) and td["next", "prev_action"].dtype == torch.float32
    assert torch.equal(td["next", "prev_action"], td["action"])
    assert env.reset()["prev_action"].tolist() == [0.0]


def test_episode_time_truncation():
    env = TransformedEnv(TMaze(2, corridor_length=50, seed=0), EpisodeTime(max_steps=4))
    ro = env.rollout(10, break_when_any_done=False)
    assert ro["time_idx"][0].squeeze(-1).tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert ro["next", "truncated"][0].squeeze(-1).nonzero().squeeze(-1).tolist() == [3, 7]


def _trials(d):
    """Split [N, T] collected data into complete trials: list of (env, start, end) with end inclusive."""
    out = []
    done = d["next", "done"].squeeze(-1)
    for i in range(d.shape[0]):
        ends = done[i].nonzero().squeeze(-1).tolist()
        starts = [0] + [e + 1 for e in ends[:-1]]
        out += [(i, s, e) for s, e in zip(starts, ends) if d["is_init"][i, s]]
    return out


@pytest.mark.parametrize("reset_mode", ["same_step", "dummy_step"])
def test_meta_trial_k_episodes_one_done_and_same_task(reset_mode):
    L, k = 3, 3
    env = make_amago_env(ToyTaskEnv(4, episode_len=L), k_episodes=k, reset_mode=reset_mode)
    d = collect(env, 4 * 50)
    trials = _trials(d)
    trial_len = k * L + (k - 1) * (reset_mode == "dummy_step")
    assert len(trials) >= 8
    tasks = []
    for i, s, e in trials:
        assert e - s + 1 == trial_len  # exactly one done, after the k-th episode
        assert d["next", "done"][i, s:e + 1].sum() == 1
        assert d["next", "terminated"][i, e] and not d["next", "truncated"][i, e]
        assert d["next", "episode_end"][i, s:e + 1].sum() == k
        assert d["next", "episode_count"][i, e].item() == k
        # every inner episode of the toy env returns 1 + 2 + ... + L
        assert d["next", "episode_return"][i, s:e + 1].sum().item() == k * L * (L + 1) / 2
        obs = torch.cat([d["observation"][i, s:e + 1], d["next", "observation"][i, s:e + 1]])
        assert (obs[:, 0] == obs[0, 0]).all()  # same task within the trial
        tasks.append(obs[0, 0].item())
        assert d["soft_reset"][i, s].item() == 1.0
        assert d["next", "soft_reset"][i, s:e + 1].sum().item() == k - 1
    assert len(set(tasks)) == len(tasks)  # new task per trial (10k tasks: collisions ~impossible)


def test_meta_trial_same_step_semantics():
    env = make_amago_env(ToyTaskEnv(1, episode_len=2), k_episodes=2)
    ro = env.rollout(4, break_when_any_done=False)[0]
    # episode step counter in obs[1]: the end step already shows the next episode's start (0)
    assert ro["next", "observation"][:, 1].tolist() == [1, 0, 1, 2]
    assert ro["next", "reward"].squeeze(-1).tolist() == [1, 2, 1, 2]
    assert ro["next", "soft_reset"].squeeze(-1).tolist() == [0, 1, 0, 0]
    assert ro["next", "done"].squeeze(-1).tolist() == [False, False, False, True]
    assert ro["next", "time_idx"].squeeze(-1).tolist() == [1, 2, 3, 4]


def test_meta_trial_dummy_step_semantics():
    env = make_amago_env(ToyTaskEnv(1, episode_len=2), k_episodes=2, reset_mode="dummy_step")
    ro = env.rollout(5, break_when_any_done=False)[0]
    # the end step shows the true last obs (2), the dummy step pays 0 and shows the start (0)
    assert ro["next", "observation"][:, 1].tolist() == [1, 2, 0, 1, 2]
    assert ro["next", "reward"].squeeze(-1).tolist() == [1, 2, 0, 1, 2]
    assert ro["next", "prev_reward"].squeeze(-1).tolist() == [1, 2, 0, 1, 2]
    assert ro["next", "soft_reset"].squeeze(-1).tolist() == [0, 0, 1, 0, 0]
    assert ro["next", "episode_end"].squeeze(-1).tolist() == [False, True, False, False, True]
    assert ro["next", "episode_return"].squeeze(-1).tolist() == [0, 3, 0, 0, 3]
    assert ro["next", "done"].squeeze(-1).tolist() == [False] * 4 + [True]


def test_meta_trial_horizon_truncates_and_max_episode_steps():
    env = make_amago_env(ToyTaskEnv(2, episode_len=100), horizon=5, max_episode_steps=2)
    ro = env.rollout(5, break_when_any_done=False)
    assert ro["next", "observation"][0, :, 1].tolist() == [1, 0, 1, 0, 1]  # soft reset every 2 steps
    assert ro["next", "done"][:, -1].all() and ro["next", "truncated"][:, -1].all()
    assert not ro["next", "terminated"].any()  # a horizon end mid-episode is a truncation


def test_meta_trial_without_soft_reset_support_redraws_task():
    env = make_amago_env(ToyTaskEnv(2, episode_len=2, keep_task=False), k_episodes=3)
    ro = env.rollout(6, break_when_any_done=False)
    tasks = ro["next", "observation"][0, :, 0]
    assert tasks[0] != tasks[1] and tasks[2] != tasks[3]  # each soft reset used the env's ordinary reset


def test_meta_trial_bad_args():
    with pytest.raises(ValueError, match="k_episodes or horizon"):
        MetaTrial()
    with pytest.raises(ValueError, match="reset_mode"):
        MetaTrial(k_episodes=2, reset_mode="later")
    with pytest.raises(ValueError, match="k_episodes"):
        MetaTrial(k_episodes=0)


def test_meta_trial_gym_cartpole_smoke():
    env = make_amago_env(GymEnv("CartPole-v1"), k_episodes=2)
    check_env_specs(env)
    torch.manual_seed(0)
    env.set_seed(0)
    ro = env.rollout(300, break_when_any_done=False)
    done = ro["next", "done"].squeeze(-1).nonzero().squeeze(-1).tolist()
    assert len(done) >= 3
    ends = ro["next", "episode_end"].squeeze(-1)
    steps = torch.arange(300)
    prev = -1
    for e in done:
        seg = slice(prev + 1, e + 1)
        assert ends[seg].sum() == 2 and ends[e]  # two CartPole episodes per trial, the 2nd ends the trial
        # CartPole pays 1 per step: an episode's return is its length
        end_steps = steps[seg][ends[seg]]
        lens = torch.diff(torch.cat([torch.tensor([prev]), end_steps]))
        assert ro["next", "episode_return"].squeeze(-1)[seg][ends[seg]].tolist() == lens.float().tolist()
        assert ro["time_idx"][prev + 1].item() == 0 and ro["is_init"][prev + 1].item()
        prev = e
    check_alignment(ro.unsqueeze(0), env.action_spec)


def test_make_amago_env_stack_and_double_to_float():
    env = make_amago_env(GymEnv("Pendulum-v1"), k_episodes=2, max_episode_steps=5)
    names = [type(t).__name__ for t in env.transform]
    assert names == ["MetaTrial", "InitTracker", "PrevActionReward", "EpisodeTime"]
    td = env.reset()
    for k in ("prev_action", "prev_reward", "time_idx", "is_init", "soft_reset"):
        assert k in td.keys()
    assert td["observation"].dtype == torch.float32
    ro = env.rollout(10, break_when_any_done=False)
    assert ro["next", "done"].squeeze(-1).tolist() == [False] * 9 + [True]
    assert ro["next", "episode_end"].squeeze(-1).nonzero().squeeze(-1).tolist() == [4, 9]
    plain = make_amago_env(TMaze(2, seed=0), max_episode_steps=3)
    assert [type(t).__name__ for t in plain.transform] == ["InitTracker", "PrevActionReward", "EpisodeTime"]
    assert plain.transform[-1].max_steps == 3


def test_a_reward_transform_after_make_amago_env_is_refused_and_first_is_right():
    """A transform appended after make_amago_env that rescales the reward would leave prev_reward unscaled (0.1 vs 1.0
    here, silently): refused before the next step, naming the fix; inserted first (or given to make_amago_env inside the
    env) the policy sees the reward the loss trains on. Transforms that only read the reward stay allowed."""
    from torchrl.envs import RewardScaling, RewardSum

    def env():
        return make_amago_env(TMaze(2, corridor_length=1, seed=0))  # reward 1 at the 2nd step when y == goal

    late = env()
    late.append_transform(RewardScaling(0.0, 10.0))
    with pytest.raises(ValueError, match=r"RewardScaling writes 'reward' after make_amago_env.*insert_transform\(0"):
        late.rollout(2)
    with pytest.raises(ValueError, match="RewardScaling writes 'reward'"):  # TorchRL unwraps a nested env into one
        TransformedEnv(env(), RewardScaling(0.0, 10.0)).rollout(2)
    summed = env()
    summed.append_transform(RewardSum())  # reads the reward, writes episode_reward
    summed.rollout(2)
    for first in (env().insert_transform(0, RewardScaling(0.0, 10.0)),
                  make_amago_env(TransformedEnv(TMaze(2, corridor_length=1, seed=0), RewardScaling(0.0, 10.0)))):
        torch.manual_seed(0)
        data = check_amago_env(first, steps_per_env=8)  # asserts ("next", "prev_reward") == ("next", "reward")
        assert set(data["next", "reward"].unique().tolist()) <= {0.0, 10.0}


def test_an_action_transform_after_make_amago_env_is_refused_and_inside_it_is_right():
    """An action transform appended after make_amago_env maps the policy's action before PrevActionReward sees it:
    prev_action was the env's 4-action one-hot under a 6-action policy (refused then only by the timestep encoder's
    shape check, naming neither). Refused before the next step; inside the env given to make_amago_env, prev_action
    is the policy's action."""
    from torchrl.envs import DiscreteActionProjection

    from torchrl_amago.envs import HiddenDoor

    late = make_amago_env(HiddenDoor(2, n_doors=4, seed=0))
    late.append_transform(DiscreteActionProjection(4, 6))
    with pytest.raises(ValueError, match=r"DiscreteActionProjection maps 'action' after make_amago_env.*Transformed"):
        late.rollout(2)
    inside = make_amago_env(TransformedEnv(HiddenDoor(2, n_doors=4, seed=0), DiscreteActionProjection(4, 6)))
    data = inside.rollout(3)
    assert data["next", "prev_action"].shape[-1] == 6
    assert torch.equal(data["next", "prev_action"], data["action"].float())


def test_action_counts_counts_each_action_since_the_hard_reset_across_soft_resets():
    # ToyTaskEnv: 3-step episodes, 2 episodes per trial (one soft reset at t = 3), trial of 6 steps
    env = make_amago_env(ToyTaskEnv(2), k_episodes=2, action_counts=True)
    actions = [[0, 1], [0, 1], [1, 1], [0, 0], [1, 1], [1, 0]]
    td, seen = env.reset(), []
    for a in actions:
        seen.append(td["action_counts"].tolist())
        td["action"] = torch.tensor(a)
        out, td = env.step_and_maybe_reset(td)
    # hand count of the actions before each step; the soft reset at t = 3 does not restart it
    assert seen == [[[0, 0], [0, 0]], [[1, 0], [0, 1]], [[2, 0], [0, 2]], [[2, 1], [0, 3]], [[3, 1], [1, 3]],
                    [[3, 2], [1, 4]]]
    assert out["next", "done"].all() and out["next", "action_counts"].tolist() == [[3, 3], [2, 4]]
    assert td["action_counts"].tolist() == [[0, 0], [0, 0]]  # the hard reset after the trial


def test_action_counts_partial_reset_keeps_other_envs():
    env = make_amago_env(TMaze(3, corridor_length=2, seed=0, categorical_action_encoding=True), action_counts=True)
    td = env.reset()
    td["action"] = torch.tensor([1, 2, 3])
    td = env.step(td)["next"]
    td.set("_reset", torch.tensor([[False], [True], [False]]))
    counts = env.reset(td)["action_counts"]
    assert counts.argmax(-1).tolist()[0::2] == [1, 3] and counts.sum(-1).tolist() == [1, 0, 1]


def test_action_counts_collector_alignment_and_errors():
    d = check_amago_env(make_amago_env(TMaze(4, corridor_length=3, seed=0), action_counts=True))
    # every stored step: counts before the step + its action = the counts under "next"
    assert torch.equal(d["action_counts"] + d["action"].float(), d["next", "action_counts"])
    with pytest.raises(ValueError, match="counts discrete actions; this env's action space is 'continuous'"):
        make_amago_env(GymEnv("Pendulum-v1"), action_counts=True)
    with pytest.raises(ValueError, match="place it after PrevActionReward"):
        TransformedEnv(TMaze(2, corridor_length=2), ActionCounts()).observation_spec
    with pytest.raises(ValueError, match="needs an env from make_amago_env"):
        add_action_counts(TMaze(2, corridor_length=2))
