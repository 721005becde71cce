"""benchmarks/async_collect.py: the overlap bound and each mode's speedup and fraction of it (hand-computed)."""
from argparse import Namespace
from pathlib import Path

import pytest

from tests.examples.test_examples_smoke import load_module

bench = load_module(Path(__file__).parents[2] / "benchmarks" / "async_collect.py", "bench_async_collect")
ARGS = Namespace(num_collectors=1, env_cost_ms=20.0, env_wait_ms=0.0, num_threads=None)


def sync_round(acting, learning, env_rate, update_rate):
    return {"env_steps_per_s": env_rate, "updates_per_s": update_rate, "acting_s": acting, "learning_s": learning,
            "overlap_bound": (acting + learning) / max(acting, learning), "load": [0.0, 0.0]}


def test_speedup_is_the_smaller_ratio_and_the_fraction_is_per_round():
    sync = [sync_round(1.0, 3.0, 100.0, 10.0), sync_round(1.0, 4.0, 80.0, 8.0), sync_round(2.0, 2.0, 50.0, 5.0)]
    asyn = [{"env_steps_per_s": 130.0, "updates_per_s": 12.0, "load": [0.0, 0.0]},  # ratios 1.3, 1.2 -> 1.2
            {"env_steps_per_s": 80.0, "updates_per_s": 9.0, "load": [0.0, 0.0]},  # 1.0, 1.125 -> 1.0
            {"env_steps_per_s": 90.0, "updates_per_s": 9.5, "load": [0.0, 0.0]}]  # 1.8, 1.9 -> 1.8
    s = bench.summary("sync", sync, sync, ARGS)
    assert s["overlap_bound"] == pytest.approx(4 / 3, abs=1e-4)  # median of 4/3, 5/4, 2
    assert "speedup" not in s and s["num_collectors"] == 0
    a = bench.summary("async", asyn, sync, ARGS)
    fractions = [1.2 / (4 / 3), 1.0 / 1.25, 1.8 / 2.0]  # 0.9, 0.8, 0.9
    assert a["speedup"] == pytest.approx(1.2, abs=1e-4)
    assert a["fraction_of_bound"] == pytest.approx(0.9, abs=1e-4)
    assert a["best_fraction_of_bound"] == pytest.approx(max(fractions), abs=1e-4)
    assert [r["fraction_of_bound"] for r in a["rounds"]] == pytest.approx(fractions, abs=1e-3)
    assert a["num_collectors"] == 1
