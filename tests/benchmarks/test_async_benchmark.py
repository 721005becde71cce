"""benchmarks/async_collect.py: the overlap bound and each mode's speedup and fraction of it (hand-computed)."""
from argparse import Namespace
from pathlib import Path

import pytest

from tests.examples.test_examples_smoke import load_module

bench = load_module(Path(__file__).parents[2] / "benchmarks" / "async_collect.py", "bench_async_collect")
ARGS = Namespace(num_collectors=1, env_cost_ms=20.0, env_cost_per_env_ms=0.0, env_wait_ms=0.0, num_threads=None)


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


@pytest.mark.parametrize("cls, per_batch, n, expected_s", [
    (bench.CpuCostPerStep, 20.0, 8, 0.020),  # per batched step, whatever the envs
    (bench.CpuCostPerEnvStep, 10.0, 8, 0.080),  # the batch's envs in turn
    (bench.CpuCostPerEnvStep, 10.0, 2, 0.020),  # a worker with a quarter of the envs pays a quarter
    (bench.WaitPerStep, 12.5, 4, 0.050)])
def test_step_costs_per_batch_and_per_env(cls, per_batch, n, expected_s):
    from tensordict import TensorDict
    assert cls(per_batch).seconds(TensorDict({}, batch_size=[n])) == pytest.approx(expected_s)


def test_make_env_stacks_the_chosen_costs():
    env = bench.make_env(2, env_cost_per_env_ms=5.0, env_wait_ms=1.0)
    costs = [(type(t).__name__, t.ms) for t in env.transform if isinstance(t, bench.StepCost)]
    assert costs == [("CpuCostPerEnvStep", 5.0), ("WaitPerStep", 1.0)]


def test_collectors_bound_splits_acting_over_the_workers():
    assert bench.collectors_bound(1.0, 3.0, 1) == pytest.approx(4 / 3)  # K = 1: the overlap bound
    assert bench.collectors_bound(10.0, 3.0, 2) == pytest.approx(13 / 5)  # acting 5 s per worker, still the larger
    assert bench.collectors_bound(10.0, 3.0, 4) == pytest.approx(13 / 3)  # 2.5 s per worker: learning bounds it
    sync = [sync_round(10.0, 3.0, 30.0, 3.0)]
    a = bench.summary("async", [{"env_steps_per_s": 78.0, "updates_per_s": 7.8, "load": [0.0, 0.0]}], sync,
                      Namespace(**{**vars(ARGS), "num_collectors": 2}))
    assert a["speedup"] == pytest.approx(2.6) and a["collectors_bound"] == pytest.approx(2.6)
    assert a["fraction_of_collectors_bound"] == pytest.approx(1.0)
    assert a["fraction_of_bound"] == pytest.approx(2.6 / (13 / 10))
