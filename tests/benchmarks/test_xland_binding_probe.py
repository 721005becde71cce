"""benchmarks/xland_binding_probe.py: the labels counted by hand on made-up trials, trials cut from a rollout, and
(with xminigrid) the labels read from the agent's view checked against the env's hidden rule."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FWD, PICK = 0, 3
A, B, WALL, FLOOR = (3, 1), (4, 2), (2, 5), (1, 0)


def _tool():
    return load_module(Path(ROOT) / "benchmarks" / "xland_binding_probe.py", "xland_binding_probe")


def test_labels_follow_the_latest_earlier_first_pick():
    # per row: (faced, action, reward, attempt); the agent faces `faced` from the bottom centre of its 5 x 5 view
    rows = [
        [(A, PICK, 0, 0), (FLOOR, FWD, 0, 0), (A, FWD, 0, 1), (B, PICK, 1, 1), (A, FWD, 0, 2), (B, FWD, 0, 2)],
        [(B, FWD, 0, 0), (A, PICK, 1, 1), (WALL, FWD, 0, 2), (A, PICK, 1, 2)],
        [(B, PICK, 0, 0), (B, PICK, 0, 0), (FLOOR, FWD, 0, 1), (A, FWD, 0, 2), (B, FWD, 0, 2)],
    ]
    N, T = len(rows), 6
    grid, action = torch.zeros(N, T, 5, 5, 2, dtype=torch.uint8), torch.zeros(N, T, dtype=torch.long)
    reward, attempt, mask = torch.zeros(N, T), torch.zeros(N, T, dtype=torch.long), torch.zeros(N, T, dtype=torch.bool)
    for i, row in enumerate(rows):
        for t, (faced, a, r, k) in enumerate(row):
            grid[i, t, 3, 2] = torch.tensor(faced)
            action[i, t], reward[i, t], attempt[i, t], mask[i, t] = a, r, k, True
    grid[1, 0, 2, 2] = torch.tensor(A)  # an object two cells ahead is not the faced one
    label, outcome = _tool().binding_labels(grid, action, reward, attempt, mask)
    # row 0: attempt 0 picks A, no reward -> in attempt 1, A is wrong, B right; attempt 1 picks B, rewarded -> the same
    # row 1: nothing picked in attempt 0 -> no label in attempt 1; attempt 1's pick of A succeeded; a wall: no label
    # row 2: attempt 0 first picks B (wrong; its second pick does not count), attempt 1 picks nothing -> still B's
    assert label.tolist() == [[-1, -1, 0, 1, 0, 1], [-1, -1, -1, 1, -1, -1], [-1, -1, -1, 1, 0, -1]]
    assert outcome.tolist() == [[-1, -1, 0, 0, 1, 1], [-1, -1, -1, 1, -1, -1], [-1, -1, -1, 0, 0, -1]]


def test_trial_windows_cut_finished_trials_and_pad():
    init = torch.tensor([[1, 0, 0, 1, 0, 1, 0], [1, 0, 1, 0, 0, 0, 1]], dtype=torch.bool).unsqueeze(-1)
    step = torch.arange(14).reshape(2, 7).float()
    td = TensorDict({"is_init": init, "x": step, "next": {"y": step + 100}}, batch_size=[2, 7])
    out = _tool().trial_windows(td, 4)
    # slot 0: steps 0-2, 3-4 (its trial from 5 is open); slot 1: 7-8, 9-12 (its trial from 13 is open)
    assert out["x"].tolist() == [[0, 1, 2, 0], [3, 4, 0, 0], [7, 8, 0, 0], [9, 10, 11, 12]]
    assert out["next", "y"][0, :3].tolist() == [100, 101, 102]
    assert out["mask"].sum(-1).tolist() == [3, 2, 2, 4] and not out["mask"][0, 3]
    with pytest.raises(ValueError, match="longer than max_seq_len 2"):
        _tool().trial_windows(td, 2)


def test_labels_from_the_view_match_the_hidden_rule():
    """A random policy that picks up often in real XLand trials: at every labelled step the label says whether the
    faced object (read from the env's grid) is the one the ruleset turns into the goal."""
    pytest.importorskip("xminigrid")
    from torchrl_amago.envs import make_amago_env
    from torchrl_amago.envs.libs import make_xland_env

    attempts = load_module(Path(ROOT) / "benchmarks" / "xland_attempts.py", "xland_attempts")
    n = 8
    env = make_amago_env(make_xland_env(n, k_episodes=3, rooms=1, grid_size=6, ruleset_benchmark="local-hidden-rule",
                                        max_steps=15, num_distractors=1, seed=0))
    g = torch.Generator().manual_seed(0)
    truth = []

    def policy(td):
        state = env.base_env._state
        agent = state["ts"].state.agent
        pos, direction = np.asarray(agent.position), np.asarray(agent.direction)
        grid, right = np.asarray(state["ts"].state.grid), np.asarray(state["ruleset"].rules)[:, 0, 1:3]
        row = []
        for i in range(n):
            r, c = pos[i] + attempts.MOVES[int(direction[i])]
            row.append(bool((grid[i, r, c] == right[i]).all()))
        truth.append(row)
        a = torch.multinomial(torch.tensor([3.0, 1, 1, 3, 0.5, 0]), n, replacement=True, generator=g)
        td.set("action", torch.nn.functional.one_hot(a, 6).to(td.get("action", torch.zeros(n, 6)).dtype))
        return td

    td = env.rollout(900, policy, break_when_any_done=False)
    env.close()
    td.set("truth", torch.tensor(truth).T)
    data = _tool().trial_windows(td, 45)
    label, outcome = _tool().binding_labels(data["grid"], data["action"].argmax(-1), data["next", "reward"][..., 0],
                                            data["episode_count"][..., 0], data["mask"])
    sel = label >= 0
    assert (outcome[sel] == 0).sum() >= 50 and (outcome[sel] == 1).sum() >= 50
    assert torch.equal(label[sel].bool(), data["truth"][sel])


def test_runs_end_to_end_on_a_tiny_run(tmp_path, capsys):
    pytest.importorskip("xminigrid")
    from tests.examples.test_examples_smoke import TINY

    flags = ["--max_steps", "6", "--timesteps_per_epoch", "18"]
    tool = _tool()
    tool.load_example("11_xland_minigrid").main(TINY + flags + ["--buffer_dir", str(tmp_path), "--run_name", "r"])
    capsys.readouterr()
    tool.main(["--run", str(tmp_path / "r"), "--trials", "150", "--steps", "3", "--", *TINY, *flags])
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines() if x.startswith("{")]
    assert lines[0]["trials"] >= 150 and lines[0]["labelled_steps"] > 0
    assert [(x["probe"], x.get("step")) for x in lines[1:]] == [("fresh", 3), ("trained", None)]
    assert all(0.0 <= x["test_accuracy"]["all"] <= 1.0 for x in lines[1:])
