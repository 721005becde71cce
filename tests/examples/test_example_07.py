"""07_metaworld: `--help` lists the example's flags; a tiny in-process run over the stand-in Meta-World benchmark
(tests/envs/libs/test_metaworld.py) reports per-attempt success and per-task eval returns."""
import csv
import math

import pytest

from tests.envs.libs.test_metaworld import FakeBenchmark
from tests.examples.test_examples_smoke import TINY, load_example




def test_tiny_run_on_stand_in_benchmark(tmp_path):
    k, ep = 2, 4
    argv = TINY + ["--timesteps_per_epoch", str(k * ep), "--buffer_dir", str(tmp_path), "--run_name", "mw",
                   "--k", str(k), "--episode_length", str(ep), "--final_eval_trials", "2"]
    summary = load_example("07_metaworld").main(argv, benchmark_obj=FakeBenchmark())
    assert summary["env_steps"] == 2 * 2 * k * ep
    assert summary["grad_steps"] == 2 * 2
    assert math.isfinite(summary["eval_return"])
    for i in range(k):
        assert 0.0 <= summary[f"eval_episode_{i}_success"] <= 1.0
        assert math.isfinite(summary[f"eval_episode_{i}_return"])
    with open(tmp_path / "mw" / "logs" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert "eval/return/door-open-v3" in header  # per-task eval returns on the test split's task names
    assert "eval/episode_1_success" in header and "train/episode_0_success" in header


def test_real_metaworld_tiny_run(tmp_path):
    pytest.importorskip("metaworld")
    argv = TINY + ["--timesteps_per_epoch", "6", "--buffer_dir", str(tmp_path), "--run_name", "mw_real",
                   "--benchmark", "reach-v2", "--k", "2", "--episode_length", "3", "--final_eval_trials", "1"]
    summary = load_example("07_metaworld").main(argv)
    assert summary["env_steps"] == 2 * 2 * 6 and math.isfinite(summary["eval_return"])
    assert 0.0 <= summary["eval_episode_1_success"] <= 1.0
