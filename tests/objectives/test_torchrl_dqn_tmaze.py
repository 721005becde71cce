"""Learning tests for docs/swapping.md's "Our memory in your TorchRL algorithm": TorchRL's Collector and its own
losses train our Transformer (TrajectoryEncoderModule acting, MemoryEmbedding in the loss) to solve T-Maze-10
(benchmarks/torchrl_dqn_tmaze.py). A memory-free agent cannot beat 0.5 here: the goal side is only in o_0.
Measured:
- `--loss dqn` (DQNLoss + EGreedyModule; 60k / 40k frames): seeds 0 / 1 / 2 first reach a greedy success >= 0.95
  at 1,904 / 464 / 2,864 updates and end at 1.0 (seed 0's curve: docs/results/torchrl_dqn_tmaze10.csv).
- `--loss sac` (DiscreteSACLoss, alpha fixed at 0.02, the actor on a detached memory; 30k frames): seeds 0-4 first
  reach 1.0 at 624 / 624 / 624 / 464 / 1,104 updates and hold 1.0 at every later evaluation to 2,704
  (docs/results/torchrl_sac_tmaze10*.csv).
Each test runs one seed and stops at its first evaluation at >= 0.95 (~15-25 s)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from tests.examples.test_examples_smoke import load_module

ROOT = Path(os.path.dirname(os.path.abspath(__file__))).parents[1]


@pytest.mark.parametrize("loss, seed", [("dqn", 1), ("sac", 3)])
def test_torchrl_loss_with_our_transformer_solves_tmaze10(loss, seed):
    script = load_module(ROOT / "benchmarks" / "torchrl_dqn_tmaze.py", "torchrl_dqn_tmaze")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = script.train(horizon=10, seed=seed, frames=30_000, stop_when_solved=True, quiet=True, loss=loss)
    assert out["final_success"] >= 0.95, out
