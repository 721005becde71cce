"""benchmarks/babyai_attempts.py on the minigrid stand-in: `new_layout` moves every later attempt to a fresh layout,
`no_memory` empties the policy's memory there, a scripted policy that remembers attempt 1's answer gains only in
`same`, and the script runs end to end on a tiny run of example 10."""
import json
import os
from pathlib import Path

import pytest
import torch

from tests.envs.libs.test_babyai import FakeMiniGrid
from tests.examples.test_examples_smoke import TINY, load_example, load_module
from torchrl_amago.envs import make_amago_env
from torchrl_amago.envs.libs.babyai import MultitaskMetaBabyAI, make_babyai_env
from torchrl_amago.trainers.metrics import adaptation_report, attempt_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    return load_module(Path(ROOT) / "benchmarks" / "babyai_attempts.py", "babyai_attempts")


def _fake_env(n=8):
    env = make_amago_env(make_babyai_env(["FakeGoTo-v0"], n, k_episodes=2, seed_range=(0, 10**6),
                                         env_factory=FakeMiniGrid, seed=0))
    env.set_seed(0)
    return env


def _remembering_policy(env):
    """Attempt 1 tries actions 0, 1, 2, ... in turn; the action that was rewarded is taken first in attempt 2."""
    base, n = env.base_env, env.batch_size[0]
    known = torch.full((n,), -1)

    def act(td):
        known[td["is_init"].reshape(n)] = -1
        solved = td["prev_reward"].reshape(n) > 0
        known[solved] = td["prev_action"].reshape(n, -1).argmax(-1)[solved]
        steps = torch.tensor([base._env(i).t for i in range(n)])
        action = torch.where((torch.as_tensor(base._count) > 0) & (known >= 0), known, steps.clamp(max=6))
        td["action"] = torch.nn.functional.one_hot(action, 7).float()
        return td

    return act


def test_conditions_move_the_layout_or_empty_the_memory_and_remove_what_memory_buys(monkeypatch):
    script, out, records, starts = _script(), {}, {}, []
    start = MultitaskMetaBabyAI._start_attempt

    def recorded(self, i):  # (slot, attempt, layout seed) of every attempt start
        start(self, i)
        starts.append((i, int(self._count[i]), int(self.layout_seed[i])))

    monkeypatch.setattr(MultitaskMetaBabyAI, "_start_attempt", recorded)
    for condition in script.CONDITIONS:
        env = _fake_env()
        starts.clear()
        data = script.rollout(env, _remembering_policy(env), 11 * 6, condition, torch.Generator().manual_seed(0))
        assert "_start_attempt" not in vars(env.base_env)  # the patch is gone afterwards
        assert torch.equal(data["is_init"], data["time_idx"] == 0)  # the recorded trials keep the env's is_init
        records[condition] = attempt_records(data)
        out[condition] = adaptation_report(records[condition])
        first, pairs = {}, []
        for i, attempt, seed in starts:
            if attempt == 0:
                first[i] = seed
            elif i in first:
                pairs.append((first[i], seed))
        assert len(pairs) >= 8 and all(0 <= b <= 10**6 for _, b in pairs)
        assert all((a != b) == (condition == "new_layout") for a, b in pairs), pairs
        env.close()
    same = out["same"]
    assert same["eval/episode_0_return"] > 0 and same["eval/adaptation_gain_return_ci_low"] > 0
    for condition in ("new_layout", "no_memory"):  # the remembered action is a guess, or forgotten
        assert out[condition]["eval/episode_1_return"] < same["eval/episode_1_return"]
        assert out[condition]["eval/adaptation_gain_return"] < same["eval/adaptation_gain_return"] / 2
        worth = script.same_minus_this(records["same"], records[condition])
        assert worth["same_minus_this_return"] == pytest.approx(
            same["eval/episode_1_return"] - out[condition]["eval/episode_1_return"])
        assert worth["same_minus_this_return_ci_low"] > 0
    env = _fake_env()
    with pytest.raises(ValueError, match="condition"):
        script.rollout(env, _remembering_policy(env), 4, "other", torch.Generator())
    env.close()


def test_same_minus_this_is_the_last_attempts_difference_with_a_welch_interval():
    nan = float("nan")
    same = {"returns": torch.tensor([[0.1, 0.9], [0.2, 0.7], [0.0, 0.8]], dtype=torch.float64),
            "success": torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)}
    this = {"returns": torch.tensor([[0.3, 0.5], [0.1, 0.3], [nan, nan]], dtype=torch.float64),
            "success": torch.tensor([[1.0, 1.0], [0.0, 0.0], [nan, nan]], dtype=torch.float64)}
    out = _script().same_minus_this(same, this)
    half = 1.96 * (0.01 / 3 + 0.02 / 2) ** 0.5  # sample variances .01 (.9, .7, .8) and .02 (.5, .3)
    assert out["same_minus_this_return"] == pytest.approx(0.4)
    assert out["same_minus_this_return_ci_low"] == pytest.approx(0.4 - half)
    assert out["same_minus_this_return_ci_high"] == pytest.approx(0.4 + half)
    assert out["same_minus_this_success"] == pytest.approx(0.5)  # 1 - mean(1, 0)


def test_walks_count_each_attempts_steps():
    """The stand-in's answer is `seed % 7` within 5 steps; the remembering policy tries actions 0, 1, ... in attempt 1
    (answer + 1 steps, or 5 and no success) and answers at once in attempt 2 when attempt 1 found it."""
    script, env, walks = _script(), _fake_env(), []
    script.rollout(env, _remembering_policy(env), 11 * 6, "same", torch.Generator().manual_seed(0), walks)
    assert "_slot_step" not in vars(env.base_env)
    env.close()
    assert {k for _, _, k, _, _ in walks} == {0, 1} and len(walks) >= 16
    for task, seed, k, steps, success in walks:
        found = seed % 7 < 5
        assert task == "FakeGoTo-v0" and success == found
        assert steps == ((seed % 7 + 1 if k == 0 else 1) if found else 5)


def test_walk_report_compares_steps_with_the_shortest_walk():
    from tests.benchmarks.test_babyai_bound import _room

    corridor = (*_room(21, 3, (19, 1)), ((10, 1), 3), (19, 1), True)  # the ball out of view, shortest walk 10
    room = (*_room(8, 8, (5, 3)), ((2, 3), 0), (5, 3), True)  # the ball in view, shortest walk 3
    rooms = {1: corridor, 2: room}
    walks = [("T", 1, 0, 12, True), ("T", 2, 0, 4, True), ("T", 1, 1, 10, True), ("T", 2, 1, 3, True),
             ("T", 1, 1, 48, False)]
    out = _script().walk_report(walks, lambda task, seed: rooms[seed])
    assert out["episode_0"] == {"steps": 8.0, "shortest": 6.5, "excess_in_view": 1.0, "excess_out_of_view": 2.0,
                                "out_of_view": 0.5, "attempts": 2}
    assert out["episode_1"] == {"steps": 6.5, "shortest": 6.5, "excess_in_view": 0.0, "excess_out_of_view": 0.0,
                                "out_of_view": 0.5, "attempts": 2}


def test_runs_on_a_tiny_example_run(monkeypatch, tmp_path, capsys):
    example = load_example("10_babyai")
    monkeypatch.setattr(example, "require", lambda *a, **k: None)
    monkeypatch.setattr("torchrl_amago.envs.libs.make_babyai_env",
                        lambda tasks, n, **kw: make_babyai_env(tasks, n, env_factory=FakeMiniGrid, **kw))
    flags = ["--tasks", "FakeGoTo-v0", "--attempt_steps", "5"]
    example.main(TINY + flags + ["--timesteps_per_epoch", "11", "--buffer_dir", str(tmp_path), "--run_name", "r"])
    capsys.readouterr()
    script = _script()
    monkeypatch.setattr(script, "load_example", lambda name: example)
    from tests.benchmarks.test_babyai_bound import _room

    room = (*_room(8, 8, (5, 3)), ((2, 3), 0), (5, 3), True)  # every stand-in layout read as this room
    monkeypatch.setattr(script, "minigrid_layouts", lambda: lambda task, seed: room)
    script.main(["--run", str(tmp_path / "r"), "--eval_envs", "4", "--trials_per_env", "3", "--walks", "--",
                 *TINY, *flags])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["condition"] for x in lines] == ["same", "new_layout", "no_memory"]
    for x in lines[1:]:  # the means here are over each condition's trials with attempt 2, as the difference's
        assert x["same_minus_this_return"] == pytest.approx(
            lines[0]["episode_1_return"] - x["episode_1_return"], abs=2e-4)
        assert x["same_minus_this_return_ci_low"] < x["same_minus_this_return"] < x["same_minus_this_return_ci_high"]
    assert "same_minus_this_return" not in lines[0]
    for x in lines:
        assert x["adaptation_trials"] >= 4 and 0 <= x["episode_0_success"] <= 1 and 0 <= x["episode_1_success"] <= 1
        walks = x["walks"]["episode_0"]
        assert walks["shortest"] == 3.0 and walks["out_of_view"] == 0.0 and 1 <= walks["steps"] <= 5


def test_repeat_report_pairs_consecutive_attempts_of_one_trial():
    """Slot 0: a wrong pick of (1, 1), then the same cell again; then a new trial (seed 8) whose right pick is repeated.
    Slot 1: a wrong pick, then a different cell; then a timeout (no cell), after which nothing is counted. A later
    attempt on another layout (seed 9 after 8 in slot 1) is not a repeat of anything."""
    picks = [(0, 7, 0, (1, 1), False), (1, 5, 0, (2, 3), False), (0, 7, 1, (1, 1), False), (1, 5, 1, (4, 4), True),
             (0, 8, 0, (3, 2), True), (1, 8, 0, None, False), (0, 8, 1, (3, 2), True), (1, 8, 1, (2, 2), False),
             (1, 9, 1, (2, 2), False)]
    out = _script().repeat_report(picks)
    assert out == {"repeat_after_wrong": 0.5, "attempts_after_wrong": 2, "repeat_after_right": 1.0,
                   "attempts_after_right": 1}


def test_picks_record_the_faced_cell_on_real_pickup_levels():
    """On PickupDistDebug random turns, steps and pickups end an attempt by picking up what the agent faces or by the
    time limit: every recorded cell held a pickable object at the start, a success exactly when it is the mission's;
    a timeout records none."""
    pytest.importorskip("minigrid")
    script, gen = _script(), torch.Generator().manual_seed(0)
    env = make_amago_env(make_babyai_env(["BabyAI-PickupDistDebug-v0"], 8, k_episodes=2, max_steps=10, seed=0))
    env.set_seed(0)

    def wander(td):
        td["action"] = torch.nn.functional.one_hot(torch.randint(0, 4, (8,), generator=gen), 7).float()
        return td

    picks = []
    script.rollout(env, wander, 21 * 6, "same", torch.Generator().manual_seed(0), None, picks)
    env.close()
    from tests.benchmarks.test_babyai_bound import _bound
    from torchrl_amago.envs.libs.babyai import make_minigrid_env

    level = make_minigrid_env("BabyAI-PickupDistDebug-v0", max_steps=10)
    picked = [p for p in picks if p[3] is not None]
    assert len(picks) >= 48 and 0 < len(picked) < len(picks)
    for _, seed, _, cell, success in picked:
        level.reset(seed=seed)
        u = level.unwrapped
        assert u.grid.get(*cell) is not None and u.grid.get(*cell).type in _bound().PICKABLE
        assert success == any(o is u.grid.get(*cell) for o in u.instrs.desc.obj_set)
    level.close()
