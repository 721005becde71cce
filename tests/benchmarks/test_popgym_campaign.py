"""benchmarks/popgym_campaign.py: finals, best evals and the comparison with a reference campaign's curves."""
import csv
import json
from pathlib import Path

import pytest

from tests.examples.test_examples_smoke import load_module

PC = load_module(Path(__file__).parents[2] / "benchmarks" / "popgym_campaign.py", "popgym_campaign")
HEADER = ["env_steps", "grad_steps", "wall_s", "epoch", "eval/return"]


def _write(path: Path, *evals):
    """A metrics.csv with one eval row per value (the last: the final eval, no epoch) and a training row between."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i, v in enumerate(evals):
            w.writerow([100 * (i + 1), 60 * (i + 1), 10.0 * (i + 1), "" if i == len(evals) - 1 else i, v])
            w.writerow([100 * (i + 1), 60 * (i + 1), 10.0 * (i + 1) + 1, i, ""])


def test_summarize_reads_the_final_and_the_best_eval(tmp_path):
    _write(tmp_path / "m.csv", -0.5, -0.2, -0.4)
    rows = PC.read_metrics(str(tmp_path / "m.csv"))
    assert PC.summarize(rows) == {"final_return": -0.4, "final_weights": "last", "best_return": -0.2,
                                  "eval_return": [-0.5, -0.2, -0.4], "grad_steps": 180, "env_steps": 300}


def test_summarize_reads_the_final_eval_of_the_best_weights(tmp_path):
    """--final_eval best: the final eval is logged as eval_best/return, the periodic curve stays eval/return."""
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*HEADER, "eval_best/return"])
        w.writerows([[100, 60, 10.0, 0, -0.5, ""], [200, 120, 20.0, 1, -0.2, ""], [300, 180, 30.0, 2, -0.4, ""],
                     [300, 180, 31.0, "", "", -0.21]])
    out = PC.summarize(PC.read_metrics(str(tmp_path / "m.csv")))
    assert out["final_return"] == -0.21 and out["final_weights"] == "best" and "final_best_return" not in out
    assert out["best_return"] == -0.2 and out["eval_return"] == [-0.5, -0.2, -0.4]
    # --final_eval both: the last weights' final eval, then the best's
    with open(tmp_path / "m.csv", "a", newline="") as f:
        csv.writer(f).writerows([[300, 180, 32.0, "", -0.45, ""], [300, 180, 33.0, "", "", -0.25]])
    rows = PC.read_metrics(str(tmp_path / "m.csv"))
    both = PC.summarize(rows[:3] + rows[4:])
    assert (both["final_return"], both["final_weights"], both["final_best_return"]) == (-0.45, "last", -0.25)
    assert both["eval_return"] == [-0.5, -0.2, -0.4, -0.45]


@pytest.mark.parametrize("new, not_worse", [((0.40, 0.44, 0.42), True),  # mean 0.42 >= 0.5 - 0.1
                                            ((0.30, 0.34, 0.32), False)])  # mean 0.32 < 0.4
def test_task_summary_against_a_reference_campaign(tmp_path, capsys, new, not_worse):
    ref, out = tmp_path / "ref", tmp_path / "out"
    ref.mkdir(), out.mkdir()
    for seed, (r, n) in enumerate(zip((0.4, 0.5, 0.6), new)):  # reference finals: mean 0.5, std 0.1
        _write(ref / PC.curve_name("BattleshipEasy", seed), 0.0, r)
        _write(out / PC.curve_name("BattleshipEasy", seed), 0.0, n)
    PC.main(["--summarize", "--tasks", "BattleshipEasy", "--out", str(out), "--reference", str(ref)])
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    runs, (task,) = lines[:-1], lines[-1:]
    assert [r["final_return"] for r in runs] == list(new)
    assert task["reference_mean"] == 0.5 and task["reference_std"] == 0.1 and task["not_worse"] is not_worse
    assert task["random_return"] == pytest.approx(-0.4298)  # docs/results/03_campaign_random_baseline.jsonl
    assert task["above_random"] == 3 and task["mean"] == pytest.approx(sum(new) / 3, abs=1e-3)


def test_missing_reference_folder_is_named(tmp_path):
    with pytest.raises(SystemExit):
        PC.main(["--summarize", "--reference", str(tmp_path / "nope")])


@pytest.mark.timeout(240)
def test_one_tiny_run_end_to_end(tmp_path, capsys):
    pytest.importorskip("popgym")
    PC.main(["--tasks", "MineSweeperEasy", "--seeds", "0", "--out", str(tmp_path), "--", "--epochs", "1",
             "--final_eval_timesteps", "20", "--eval_timesteps", "20"])
    run, task = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert run["rc"] == 0 and run["grad_steps"] == 60 and len(run["eval_return"]) == 2  # epoch 0 + the final eval
    assert Path(run["curve"]).name == "03_campaign_MineSweeperEasy_seed0.csv" and Path(run["curve"]).exists()
    assert task["finals"] == [round(run["final_return"], 3)] and "not_worse" not in task


def test_skip_done_runs_only_the_missing_pairs_and_summarizes_all(tmp_path, capsys, monkeypatch):
    _write(tmp_path / PC.curve_name("BattleshipEasy", 0), 0.0, -0.3)
    ran = []

    def fake_run(task, seed, args, work):
        ran.append((task, seed))
        _write(tmp_path / PC.curve_name(task, seed), 0.0, -0.1)
        return PC.summarize_curve(task, seed, str(tmp_path / PC.curve_name(task, seed)))

    monkeypatch.setattr(PC, "run_one", fake_run)
    PC.main(["--skip_done", "--tasks", "BattleshipEasy", "--seeds", "0", "1", "--out", str(tmp_path)])
    assert ran == [("BattleshipEasy", 1)]
    task = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()][-1]
    assert task["runs"] == 2 and task["finals"] == [-0.3, -0.1]


def test_reference_folders_are_searched_in_order_per_task(tmp_path, capsys):
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    for d in (first, second, out):
        d.mkdir()
    _write(first / PC.curve_name("BattleshipEasy", 0), 0.0, -0.9)   # only BattleshipEasy in the first folder
    _write(second / PC.curve_name("BattleshipEasy", 0), 0.0, -0.1)
    _write(second / PC.curve_name("MineSweeperEasy", 0), 0.0, -0.2)
    for task in ("BattleshipEasy", "MineSweeperEasy"):
        _write(out / PC.curve_name(task, 0), 0.0, -0.3)
    PC.main(["--summarize", "--tasks", "BattleshipEasy", "MineSweeperEasy", "--seeds", "0", "--out", str(out),
             "--reference", str(first), str(second)])
    tasks = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if '"summary"' in ln]
    assert [t["reference_finals"] for t in tasks] == [[-0.9], [-0.2]]
