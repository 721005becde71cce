"""benchmarks/xland_attempts.py: the first-pick tables counted by hand on made-up step records (no JAX needed), and
the records of a real XLand rollout checked against what the env did next when xminigrid is installed."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FWD, PICK, DROP = 0, 3, 4
A, B, WALL, FLOOR = (3, 1), (4, 2), (2, 5), (1, 0)  # two pickable objects (ball, square), a wall, the floor


def _tool():
    return load_module(Path(ROOT) / "benchmarks" / "xland_attempts.py", "xland_attempts")


def _steps():
    """(slot, trial, attempt, front, action, right, holding, q_pick_up); B is the right object in every trial."""
    rows = [
        # slot 0, trial 0: attempt 0 picks A (wrong), drops it, picks B; attempt 1 picks B; attempt 2 picks A
        (0, 0, 0, WALL, PICK, False, False), (0, 0, 0, A, FWD, False, False), (0, 0, 0, A, PICK, False, False),
        (0, 0, 0, FLOOR, DROP, False, True), (0, 0, 0, B, PICK, True, False),
        (0, 0, 1, A, FWD, False, False), (0, 0, 1, B, PICK, True, False),
        (0, 0, 2, A, PICK, False, False),
        # slot 1, trial 0: attempt 0 picks B; attempt 1 picks B again; attempt 2 picks nothing
        (1, 0, 0, B, PICK, True, False), (1, 0, 1, B, PICK, True, False), (1, 0, 2, FLOOR, FWD, False, False),
        # slot 1, trial 1: attempt 0 picks A, then faces B with a full pocket (no pick); attempt 1 picks B
        (1, 1, 0, A, PICK, False, False), (1, 1, 0, B, PICK, True, True), (1, 1, 1, B, PICK, True, False),
    ]
    return [(*r, float(i)) for i, r in enumerate(rows)]  # q_pick_up: the record's index


def test_first_picks_skip_walls_full_pockets_and_later_picks():
    picks = _tool().first_picks(_steps())
    assert picks == {(0, 0, 0): (A, False), (0, 0, 1): (B, True), (0, 0, 2): (A, False),
                     (1, 0, 0): (B, True), (1, 0, 1): (B, True), (1, 0, 2): None,
                     (1, 1, 0): (A, False), (1, 1, 1): (B, True)}


def test_choice_report_counted_by_hand():
    t = _tool()
    report = t.choice_report(t.first_picks(_steps()), k_episodes=3)
    # attempt 0: A, B, A -> right 1/3, wrong 2/3; attempt 1: B, B, B; attempt 2: A, none
    assert report["episode_0"] == {"right": 0.333, "wrong": 0.667, "none": 0.0, "attempts": 3}
    assert report["episode_1"] == {"right": 1.0, "wrong": 0.0, "none": 0.0, "attempts": 3}
    assert report["episode_2"] == {"right": 0.0, "wrong": 0.5, "none": 0.5, "attempts": 2}
    # after a right pick: (0,0,1)->(0,0,2) other wrong, (1,0,0)->(1,0,1) same right, (1,0,1)->(1,0,2) none
    assert report["after_right"] == {"none": 0.333, "other_wrong": 0.333, "same_right": 0.333, "attempts": 3}
    # after a wrong pick: (0,0,0)->(0,0,1) and (1,1,0)->(1,1,1), both the other object, right
    assert report["after_wrong"] == {"other_right": 1.0, "attempts": 2}


def test_pick_up_values_group_by_the_previous_pick_and_the_faced_object():
    t = _tool()
    steps = _steps()
    values = t.pick_up_values(steps, t.first_picks(steps))
    # later attempts, facing an object with an empty pocket (q = record index): after a wrong pick (0,0,1) faces A at
    # 5 and B at 6, (1,1,1) faces B at 13; after a right pick (0,0,2) faces A at 7, (1,0,1) faces B at 9; all pick
    # up there but the step at 5, which walks on
    assert values == {"after_right/faces_right": {"mean": 9.0, "picked": 1.0, "steps": 1},
                      "after_right/faces_wrong": {"mean": 7.0, "picked": 1.0, "steps": 1},
                      "after_wrong/faces_right": {"mean": 9.5, "picked": 1.0, "steps": 2},
                      "after_wrong/faces_wrong": {"mean": 5.0, "picked": 0.0, "steps": 1}}


@pytest.mark.parametrize("benchmark", ["local-hidden-rule", "local-one-pick"])
def test_rollout_records_follow_the_real_env(benchmark):
    """A random policy that picks up often: every first pick the records call right ends the attempt (the rule turns
    it into the goal), every wrong one leaves it in the pocket (one-pick: ends the attempt unrewarded); so the front
    cell and the rule are read right."""
    pytest.importorskip("xminigrid")
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_xland_env

    t = _tool()
    n, max_steps = 8, 15
    env = make_amago_env(make_xland_env(n, k_episodes=3, rooms=1, grid_size=6, ruleset_benchmark=benchmark,
                                        max_steps=max_steps, num_distractors=1, seed=0))
    g = torch.Generator().manual_seed(0)

    def policy(td):
        a = torch.multinomial(torch.tensor([3.0, 1, 1, 3, 0.5, 0]), n, replacement=True, generator=g)
        td.set("action", torch.nn.functional.one_hot(a, 6).to(td.get("action", torch.zeros(n, 6)).dtype))
        return td

    records = t.rollout(env, policy, 600)
    env.close()
    assert {r[0] for r in records} == set(range(n)) and max(r[1] for r in records) >= 1
    by_slot = [[r for r in records if r[0] == i] for i in range(n)]
    checked = {True: 0, False: 0}
    for rows in by_slot:
        taken = 0  # steps of the current attempt before this one
        for now, nxt in zip(rows, rows[1:]):
            slot, trial, attempt, front, action, right, holding, _ = now
            last_step = taken == max_steps - 1  # the attempt ends here whatever the action
            taken = taken + 1 if (nxt[1], nxt[2]) == (trial, attempt) else 0
            if action == PICK and front[0] in t.PICKABLE and not holding and not last_step:
                moved_on = (nxt[1], nxt[2]) != (trial, attempt)
                if benchmark == "local-one-pick":
                    assert moved_on, (now, nxt)  # any pick ends the attempt
                else:
                    assert moved_on == right, (now, nxt)  # right: the attempt ended; wrong: it goes on ...
                    if not right:
                        assert nxt[6]  # ... with the object in the pocket
                checked[right] += 1
    assert checked[True] >= 10 and checked[False] >= 10
    picks = t.first_picks(records)
    assert len(picks) == len({(r[0], r[1], r[2]) for r in records})


def _layout(env):
    """Slot 0's grid and agent pose, as arrays."""
    ts = env.base_env._state["ts"]
    return (np.asarray(ts.state.grid)[0].copy(), np.asarray(ts.state.agent.position)[0].copy(),
            int(np.asarray(ts.state.agent.direction)[0]))


def test_same_layout_control_keeps_the_trials_first_layout():
    """benchmarks/xland_same_layout.py: every attempt of a trial starts on its first layout; the example's env draws a
    new one per attempt; the next trial draws a new one in both."""
    pytest.importorskip("xminigrid")
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs.jax_bridge import JaxBatchedEnv
    from torchrl_amago.envs.libs.xland import XLandTrialEnv

    same = load_module(Path(ROOT) / "benchmarks" / "xland_same_layout.py", "xland_same_layout")
    base = XLandTrialEnv.from_xminigrid(k_episodes=3, rooms=1, grid_size=7, ruleset_benchmark="local-hidden-rule",
                                        max_steps=4, num_distractors=2)
    kept = {}
    for name, fenv in (("example", base), ("same_layout", same.same_layout_env(base))):
        env = make_amago_env(JaxBatchedEnv(fenv, 1, backend="jax", seed=0))
        td = env.reset()
        starts = []
        for t in range(24):  # two trials of 3 attempts x 4 steps; forward and turns only: nothing is picked up
            if t % 4 == 0:
                starts.append(_layout(env))
            td.set("action", torch.nn.functional.one_hot(torch.tensor([t % 3 if t % 3 != 2 else 0]), 6).float())
            td = env.step_and_maybe_reset(td)[1]
        env.close()
        same_as_first = [all(np.array_equal(a, b) for a, b in zip(s, starts[3 * (i // 3)])) for i, s in
                         enumerate(starts)]
        kept[name] = same_as_first
    assert kept["same_layout"] == [True] * 6  # within each trial, as its first attempt ...
    assert kept["example"] == [True, False, False, True, False, False]
    assert not all(np.array_equal(a, b) for a, b in zip(starts[0], starts[3]))  # ... and a new trial, a new layout


def test_runs_end_to_end_on_a_tiny_same_layout_run(tmp_path, capsys):
    pytest.importorskip("xminigrid")
    from tests.examples.test_examples_smoke import TINY

    same = load_module(Path(ROOT) / "benchmarks" / "xland_same_layout.py", "xland_same_layout")
    flags = ["--max_steps", "6", "--timesteps_per_epoch", "18"]
    same.load_example("11_xland_minigrid").main(TINY + flags + ["--buffer_dir", str(tmp_path), "--run_name", "r"],
                                                make_envs=same.make_envs)
    capsys.readouterr()
    _tool().main(["--run", str(tmp_path / "r"), "--same_layout", "--eval_envs", "4", "--trials_per_env", "3", "--",
                  *TINY, *flags])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["same_layout"] and out["episode_0"]["attempts"] >= 4
    cells = {f"after_{p}/faces_{f}" for p in ("right", "wrong") for f in ("right", "wrong")}
    assert set(out["q_pick_up"]) <= cells  # a tiny run's agent may never face an object after a pick
    assert all(np.isfinite(c["mean"]) and c["steps"] > 0 for c in out["q_pick_up"].values())
    assert sum(out["episode_0"][o] for o in ("right", "wrong", "none")) == pytest.approx(1.0, abs=0.002)
