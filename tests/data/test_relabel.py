"""Hindsight relabeling: relabeled rewards/goals/terminals equal what the env gives for the new goals."""
import functools

import pytest
import torch
from torchrl.envs.utils import step_mdp

from tests.data.toy_envs import GoalGridEnv, collect
from torchrl_amago.data import HindsightRelabel, make_sequence_replay, sequential_goal_rewards

SIZE, K, HORIZON = 4, 3, 20


def whole_trials(n_batches=8, seed=0):
    """Finished trials [L] of GoalGridEnv with prev_reward added (root r_{t-1}, next r_t)."""
    return [t.clone() for t in _whole_trials(n_batches, seed)]


@functools.lru_cache(maxsize=4)
def _whole_trials(n_batches, seed):
    batches = collect(lambda: GoalGridEnv(4, SIZE, K, HORIZON, seed=seed), 4 * 20, n_batches, seed=seed)
    rows = torch.cat(batches, 1)
    out = []
    for row in rows.unbind(0):
        ends = row["next", "done"].reshape(-1).nonzero().squeeze(-1).tolist()
        start = 0
        for e in ends:
            tr = row[start:e + 1].clone()
            if bool(tr["is_init"][0]):
                r = tr["next", "reward"]
                tr["prev_reward"] = torch.cat([torch.zeros(1, 1), r[:-1]])
                tr["next", "prev_reward"] = r.clone()
                out.append(tr)
            start = e + 1
    return out


def replay_env(goals, actions):
    """Step a fresh env with the given goals and actions; returns the per-step outputs [L]."""
    env = GoalGridEnv(1, SIZE, K, HORIZON)
    env.forced_goals = goals[None]
    td = env.reset()
    steps = []
    for a in actions:
        td["action"] = a.reshape(1)
        td = env.step(td)
        steps.append(td.clone())
        td = step_mdp(td)
    return torch.cat(steps, 0)


def check_against_env(tr, original):
    L = tr.batch_size[0]
    env = replay_env(tr["goals"][0], tr["action"])
    assert torch.equal(tr["next", "reward"], env["next", "reward"])
    assert torch.equal(tr["goals"], env["goals"])
    assert torch.equal(tr["next", "goals"], env["next", "goals"])
    assert torch.equal(tr["next", "achieved"], env["next", "achieved"])
    assert torch.equal(tr["next", "terminated"], env["next", "terminated"])
    assert torch.equal(tr["next", "done"], env["next", "done"])
    assert torch.equal(tr["next", "truncated"], env["next", "truncated"])
    assert not env["next", "done"][:-1].any()  # the env's trial ends exactly where the relabeled one does
    assert torch.equal(tr["prev_reward"][1:], tr["next", "reward"][:-1]) and tr["prev_reward"][0] == 0
    assert torch.equal(tr["next", "prev_reward"], tr["next", "reward"])
    assert torch.equal(tr["action"], original["action"][:L])  # actions and positions are untouched


def test_sequential_goal_rewards_hand_computed():
    achieved = torch.tensor([[0, 0], [1, 0], [1, 1], [1, 1], [2, 2], [1, 1]])
    goals = torch.tensor([[1, 1], [1, 1], [2, 2]])
    res = sequential_goal_rewards(achieved, goals)
    assert res.rewards.tolist() == [0, 1, 1, 1, 0]
    assert res.terminated.tolist() == [False, False, False, True, False]
    assert res.goals[1].tolist() == goals.tolist()
    assert res.goals[2].tolist() == [[-1, -1], [1, 1], [2, 2]]
    assert res.goals[3].tolist() == [[-1, -1], [-1, -1], [2, 2]]
    assert res.goals[4].tolist() == [[-1, -1]] * 3
    # the start position (obs index 0) never counts: reaching a goal takes a step
    res = sequential_goal_rewards(torch.tensor([[0, 0], [0, 1], [0, 0]]), torch.tensor([[0, 0]]))
    assert res.rewards.tolist() == [0, 1] and res.terminated.tolist() == [False, True]


def test_relabeled_trials_match_env_replay():
    trials = whole_trials()
    assert len(trials) >= 20
    relabel = HindsightRelabel(sequential_goal_rewards, "all", generator=torch.Generator().manual_seed(0))
    n_cut = n_more = 0
    for tr in trials:
        new = relabel(tr)
        check_against_env(new, tr)
        n_cut += new.batch_size[0] < tr.batch_size[0]
        n_more += new["next", "reward"].sum() > tr["next", "reward"].sum()
        hits = int(tr["next", "reward"].sum())
        # goals sorted by the time they were achieved are all reached again: 'all' fills every slot it can
        assert int(new["next", "reward"].sum()) == min(K, tr.batch_size[0])
        new_goals = new["goals"][0].tolist()
        pos = [new_goals.index(g) for g in tr["goals"][0][:hits].tolist()]  # reached goals are kept, in order
        assert pos == sorted(pos)
    assert n_cut > 0 and n_more > 0  # relabeling changed something: trials got shorter and more rewarding


def test_strategy_some_and_none():
    tr = next(t for t in whole_trials() if t["next", "reward"].sum() == 0 and t.batch_size[0] >= 10)
    assert HindsightRelabel(strategy="none")(tr) is tr
    some = HindsightRelabel(strategy="some", generator=torch.Generator().manual_seed(1))
    changed = []
    for i in range(120):
        new = some(tr)
        changed.append(int((new["goals"][0] != tr["goals"][0]).any(-1).sum()))
        if new is not tr and i < 30:
            check_against_env(new, tr)
    # h ~ U{0..k}: with no goal reached, 0..3 slots get new goals (fewer only if a new goal equals the old)
    assert set(changed) == {0, 1, 2, 3}
    assert changed.count(0) > 10


def test_trial_not_starting_at_reset_is_unchanged():
    tr = whole_trials()[0][2:].clone()
    assert not tr["is_init"][0]
    assert HindsightRelabel(strategy="all")(tr) is tr


def test_replay_buffer_relabels_whole_trials_before_windowing():
    batches = collect(lambda: GoalGridEnv(4, SIZE, K, HORIZON, seed=3), 4 * 20, 6, seed=3)
    gen = torch.Generator().manual_seed(0)
    rb = make_sequence_replay(10_000, HORIZON, 32, trial_transform=HindsightRelabel(strategy="all", generator=gen),
                              generator=torch.Generator().manual_seed(1))
    for d in batches:
        rb.extend(d)
    lengths = rb.trial_lengths()
    s = rb.sample()
    n_valid = s["mask"].sum(1)
    T = int(n_valid.max())  # the batch is trimmed to its longest (relabeled) window
    assert s.batch_size == torch.Size([32, T]) and T <= HORIZON
    for b in range(32):  # T = horizon >= every trial, so each window is a whole relabeled trial (start 0)
        n = int(n_valid[b])
        assert torch.equal(s["mask"][b], torch.arange(T) < n)
        assert bool(s["is_init"][b, 0]) and not s["is_init"][b, 1:n].any()
        env = replay_env(s["goals"][b, 0], s["action"][b, :n])
        assert torch.equal(s["next", "reward"][b, :n], env["next", "reward"])
        assert torch.equal(s["next", "done"][b, :n], env["next", "done"])
    assert (s["next", "reward"][s["mask"]].sum() > 0)
    assert int(n_valid.min()) < int(lengths.max())  # some trials were cut at the last relabeled goal


def test_mazerunner_relabeling_matches_env_replay():
    """Acceptance: relabeled MazeRunner trials equal a replay of the env on the same maze with the new goals."""
    mr = pytest.importorskip("torchrl_amago.envs.builtin.mazerunner")
    N, limit, k = 8, 40, 3
    env = mr.MazeRunner(N, maze_dim=9, num_goals=k, time_limit=limit, randomized_actions=True, seed=2,
                        categorical_action_encoding=True)
    td0 = env.reset()
    task = env.get_task()
    ro = env.rollout(limit, auto_reset=False, tensordict=td0, break_when_any_done=False,
                     policy=lambda td: td.set("action", torch.randint(5, (N,))))
    relabel = HindsightRelabel(mr.mazerunner_relabel_rewards, "all", generator=torch.Generator().manual_seed(0))
    relabeled = []
    for i in range(N):  # each env's first trial (the env auto-resets to a new maze after it)
        row = ro[i]
        end = int(row["next", "done"].reshape(-1).long().argmax())
        tr = row[: end + 1].clone()
        r = tr["next", "reward"]
        tr["prev_reward"] = torch.cat([torch.zeros(1, 1), r[:-1]])
        tr["next", "prev_reward"] = r.clone()
        new = relabel(tr)
        assert int(new["next", "reward"].sum()) == min(k, tr.batch_size[0])
        relabeled.append((tr, new))
    task["goals"] = torch.stack([new["goals"][0] for _, new in relabeled])
    td = env.reset(task=task)
    outs = []
    for t in range(limit):
        a = torch.stack([tr["action"][min(t, tr.batch_size[0] - 1)] for tr, _ in relabeled])
        td["action"] = a
        td = env.step(td)
        outs.append(td["next"].clone())
        td = step_mdp(td)
    outs = torch.stack(outs, 1)
    n_cut = 0
    for i, (tr, new) in enumerate(relabeled):
        L = new.batch_size[0]
        n_cut += L < tr.batch_size[0]
        e = outs[i, :L]
        assert torch.equal(new["next", "reward"], e["reward"])
        assert torch.equal(new["next", "terminated"], e["terminated"])
        assert torch.equal(new["next", "truncated"], e["truncated"])
        assert torch.equal(new["next", "done"], e["done"])
        assert torch.equal(new["next", "goals"], e["goals"])
        assert torch.equal(new["next", "achieved"], e["achieved"])
        assert not e["done"][:-1].any() and e["done"][-1]
        assert torch.equal(new["prev_reward"][1:], new["next", "reward"][:-1])
    assert n_cut > 0
