"""benchmarks/tmaze_horizons.py: the first solved eval of a run and whether it held, from its metrics.csv."""
import json
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
                                        "solved_update": 120, "solved_env_steps": 300, "solved_wall_s": 14.0,
                                        "held": True}
    fell = _rows((100, 40, 5, 0, 1.0), (200, 80, 9, 1, 0.5), (200, 80, 10, None, 1.0))
    out = TH.summarize(fell, 0.95)
    assert out["solved_update"] == 40 and out["held"] is False and out["final_success"] == 1.0
    never = TH.summarize(_rows((100, 40, 5, 0, 0.5)), 0.95)
    assert never["solved_update"] is None and never["held"] is False


@pytest.mark.timeout(240)
def test_one_tiny_run_end_to_end(tmp_path, capsys):
    TH.main(["--horizons", "3", "--seeds", "0", "--epochs", "2", "--out", str(tmp_path), "--",
             "--grads_per_epoch", "2", "--eval_interval", "1", "--eval_envs", "2", "--parallel_envs", "2",
             "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2", "--tstep_hidden", "16", "--tstep_out",
             "16", "--actor_hidden", "16", "--critic_hidden", "16", "--dset_max_size", "2000", "--batch_size", "4"])
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    run, summary = lines
    assert run["rc"] == 0 and run["horizon"] == 3 and len(run["eval_success"]) == 3  # 2 epochs + the final eval
    assert Path(run["curve"]).exists()
    assert summary == {"horizon": 3, "summary": True, "runs": 1, "solved": int(run["solved_update"] is not None),
                       "held": int(run["held"]), **({} if run["solved_update"] is None else {
                           "median_solved_update": run["solved_update"], "median_solved_wall_s": run["solved_wall_s"]})}
