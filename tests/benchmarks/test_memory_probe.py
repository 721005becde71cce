"""benchmarks/memory_probe.py: the linear probe reads a label the embedding holds, and only such a label."""
import os
from pathlib import Path

import torch

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _probe():
    return load_module(Path(ROOT) / "benchmarks" / "memory_probe.py", "memory_probe").probe


def test_probe_reads_a_label_written_into_the_embedding():
    torch.manual_seed(0)  # the classifier's initial weights
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(4, (400,), generator=g)
    emb = torch.cat([torch.nn.functional.one_hot(labels, 4).float(), torch.randn(400, 12, generator=g)], -1)
    assert _probe()(emb + 0.1 * torch.randn(emb.shape, generator=g), labels, 4, seed=0) > 0.95


def test_probe_stays_near_chance_on_a_label_the_embedding_does_not_hold():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    emb, labels = torch.randn(400, 16, generator=g), torch.randint(4, (400,), generator=g)
    assert _probe()(emb, labels, 4, seed=0) < 0.4  # chance 0.25
