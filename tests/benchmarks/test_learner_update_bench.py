"""benchmarks/learner_update.py `--critic count`: the benchmarked update is the count-head agent's, reading the
batch's counts (so its timing covers the count terms)."""
import os
from pathlib import Path

import torch

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_count_critic_benchmark_builds_the_count_agent_and_reads_the_counts():
    lu = load_module(Path(ROOT) / "benchmarks" / "learner_update.py", "learner_update")
    torch.manual_seed(0)
    loss = lu.build(8, 16, 1, 2, torch.device("cpu"), False, critic="count")
    count_params = [v for k, v in loss.critic_head_params.items(True, True) if "count_term" in "".join(k)]
    assert len(count_params) == 2
    assert {"CountsBesideEmbedding", "CountsPassThrough"} <= {type(m).__name__ for m in loss.modules()}
    for p in count_params:  # the count terms start at zero: give them weight so the counts matter
        p.data.normal_()
    batch = lu.make_batch(2, 8, torch.device("cpu"), counts=True)
    torch.manual_seed(1)
    a = loss(batch.clone())["loss_critic"]
    batch["action_counts"] = batch["action_counts"] + 3
    torch.manual_seed(1)
    b = loss(batch.clone())["loss_critic"]
    assert torch.isfinite(a) and not torch.allclose(a, b)
    res = lu.bench(8, 2, 16, 1, 2, torch.device("cpu"), False, min_time=0.0, min_updates=1, warmup=1, repeats=1,
                   critic="count")
    assert res["critic"] == "count" and res["updates"] == 1 and res["d_ff"] is not None


def test_vs_eager_times_the_same_model_compiled_and_eager_in_alternating_windows(monkeypatch):
    """`--vs-eager`: both settings start from the same weights, only the compiled one compiles, their windows
    alternate (which goes first alternates too), and the compare line is the ratio of the two lines."""
    lu = load_module(Path(ROOT) / "benchmarks" / "learner_update.py", "learner_update")
    compiled_fns = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled_fns.append(fn) or fn)  # no compiler needed
    order = []
    window = lu.Setting.window
    monkeypatch.setattr(lu.Setting, "window", lambda self, *a: order.append(self.info["compile"]) or window(self, *a))
    built = []
    init = lu.Setting.__init__

    def spy_init(self, *a, **kw):
        init(self, *a, **kw)
        built.append({k: v.clone() for k, v in self.loss.state_dict().items()})  # the weights as built

    monkeypatch.setattr(lu.Setting, "__init__", spy_init)
    lines = lu.bench_vs_eager(8, 2, torch.device("cpu"), min_time=0.0, min_updates=1, warmup=1, repeats=4,
                              compile_=True)
    compiled, eager, compare = lines
    assert len(compiled_fns) == 1  # the compiled setting's layer stack, nothing of the eager one
    assert (compiled["compile"], eager["compile"]) == (True, False)
    assert order == [True, False, False, True, True, False, False, True]  # after the warm-up
    a, b = built
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert compare["ratio_cpu"] == round(eager["cpu_s_per_update"] / compiled["cpu_s_per_update"], 3)
    assert len(compare["ratio_cpu_runs"]) == 4 and compiled["updates"] == eager["updates"] == 4
