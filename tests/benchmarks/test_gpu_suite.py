"""benchmarks/gpu_suite.py on a CPU-only machine: its message without CUDA, and its horizon search."""
import os
from pathlib import Path

import torch

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gpu_suite():
    return load_module(Path(ROOT) / "benchmarks" / "gpu_suite.py", "gpu_suite")


def test_gpu_suite_without_cuda_exits_with_a_message(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _gpu_suite().main([]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "needs a CUDA GPU" in out.err and "Nothing was measured" in out.err


def test_gpu_suite_horizon_search_finds_the_memory_limit(monkeypatch):
    suite = _gpu_suite()
    tried = []
    monkeypatch.setattr(suite, "fits", lambda h, device: tried.append(h) or h <= 3000)
    res = suite.longest_horizon(None, start=1024, tol=0.05)
    assert 3000 * 0.95 <= res["longest_horizon"] <= 3000 < res["first_oom_horizon"] <= 3000 * 1.06
    assert tried[:3] == [1024, 2048, 4096]  # doubling, then bisection
    monkeypatch.setattr(suite, "fits", lambda h, device: True)
    assert suite.longest_horizon(None, limit=8192)["longest_horizon"] == 8192
