"""benchmarks/tmaze_horizons.py: the first solved eval of a run and whether it held, from its metrics.csv."""
import json
import time
from pathlib import Path

import pytest

from tests.examples.test_examples_smoke import load_module

TH = load_module(Path(__file__).parents[2] / "benchmarks" / "tmaze_horizons.py", "tmaze_horizons")
HEADER = ["env_steps", "grad_steps", "wall_s", "epoch", "eval/success"]


def _rows(*vals):
    return [dict(zip(HEADER, (str(v) if v is not None else "" for v in row))) for row in vals]


def test_solved_and_held_from_the_evals():
    held = _rows((100, 40, 5, 0, 0.5), (200, 80, 9, 1, None), (300, 120, 14, 2, 0.97), (400, 160, 19, 3, 1.0),
                 (400, 160, 21, None, 1.0))  # the last row: the final (5x-length) eval, no epoch
    assert TH.summarize(held, 0.95) == {"eval_success": [0.5, 0.97, 1.0, 1.0], "final_success": 1.0,
                                        "final_weights": "last", "solved_update": 120, "solved_env_steps": 300, "solved_wall_s": 14.0,
                                        "held": True, "max_train_return": None}
    fell = _rows((100, 40, 5, 0, 1.0), (200, 80, 9, 1, 0.5), (200, 80, 10, None, 1.0))
    out = TH.summarize(fell, 0.95)
    assert out["solved_update"] == 40 and out["held"] is False and out["final_success"] == 1.0
    never = TH.summarize(_rows((100, 40, 5, 0, 0.5)), 0.95)
    assert never["solved_update"] is None and never["held"] is False
    # --final_eval best: the final eval ran the best weights (eval_best/success); held is the run's own evals'
    best = fell[:2] + [{"env_steps": "200", "grad_steps": "80", "wall_s": "10", "epoch": "", "eval/success": "",
                        "eval_best/success": "1.0"}]
    out = TH.summarize(best, 0.95)
    assert out["final_success"] == 1.0 and out["final_weights"] == "best" and out["held"] is False
    assert out["eval_success"] == [1.0, 0.5]
    # --final_eval both: the last weights' final eval, then the best's
    both = TH.summarize(fell + [dict(best[2], **{"eval_best/success": "0.75"})], 0.95)
    assert (both["final_success"], both["final_weights"], both["final_best_success"]) == (1.0, "last", 0.75)


@pytest.mark.timeout(240)
def test_one_tiny_run_end_to_end(tmp_path, capsys):
    TH.main(["--horizons", "3", "--seeds", "0", "--epochs", "2", "--out", str(tmp_path), "--cores_per_run", "1",
             "--time_limit", "200", "--",
             "--grads_per_epoch", "2", "--eval_interval", "1", "--eval_envs", "2", "--parallel_envs", "2",
             "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2", "--tstep_hidden", "16", "--tstep_out",
             "16", "--actor_hidden", "16", "--critic_hidden", "16", "--dset_max_size", "2000", "--batch_size", "4"])
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    run, summary = lines
    assert run["rc"] == 0 and run["horizon"] == 3 and len(run["eval_success"]) == 3  # 2 epochs + the final eval
    assert run["cores"] == "0-0" and "stopped_at_s" not in run
    assert Path(run["curve"]).exists()
    solved = {} if run["solved_update"] is None else {"median_solved_update": run["solved_update"],
                                                      "median_solved_wall_s": run["solved_wall_s"]}
    assert summary == {"horizon": 3, "summary": True, "runs": 1, "solved": int(run["solved_update"] is not None),
                       "held": int(run["held"]), "stayed_at_start": int(run["max_train_return"] <= -0.9), **solved}


def test_a_run_that_never_walked_the_corridor_is_counted():
    evals = _rows((100, 40, 5, 0, 0.0), (200, 80, 9, 1, None), (300, 120, 14, 2, 0.0))
    rows = [dict(r, **{"train/return": t}) for r, t in zip(evals, ("-0.998", "-0.95", ""))]
    stuck = TH.summarize(rows, 0.95)
    assert stuck["max_train_return"] == -0.95
    walked = TH.summarize([dict(rows[0], **{"train/return": "-0.2"})], 0.95)
    assert walked["max_train_return"] == -0.2
    summary = TH.summarize_horizon(1000, [{**stuck, "horizon": 1000}, {**walked, "horizon": 1000},
                                          {"horizon": 1000, "rc": 1}])  # the last one wrote no curve
    assert summary["stayed_at_start"] == 1 and summary["runs"] == 3 and summary["solved"] == 0


def test_core_sets_give_each_slot_its_own_cores():
    free = TH.core_sets(3, 5)
    assert [free.get() for _ in range(3)] == ["0-4", "5-9", "10-14"]


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan whose exit nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.timeout(120)
def test_time_limit_stops_the_run_and_every_process_it_started(tmp_path):
    """A shell that starts a child which outlives it unless killed with the group: both are gone after the limit."""
    marker = tmp_path / "child_pid"
    script = f"sleep 300 & echo $! > {marker}; wait"
    rc, _, stopped = TH.run_capped(["bash", "-c", script], time_limit=2)
    assert stopped and rc != 0
    child = int(marker.read_text())
    deadline = time.monotonic() + 10  # a signalled process takes a moment to exit: polled, not timed
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)
    rc, _, stopped = TH.run_capped(["bash", "-c", "exit 3"], time_limit=30)
    assert (rc, stopped) == (3, False)
