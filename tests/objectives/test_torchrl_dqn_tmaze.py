"""Learning test for docs/swapping.md's "Our memory in your TorchRL algorithm": TorchRL's DQNLoss, Collector and
EGreedyModule train our Transformer (TrajectoryEncoderModule acting, MemoryEmbedding in the loss) to solve
T-Maze-10 (benchmarks/torchrl_dqn_tmaze.py). A memory-free agent cannot beat 0.5 here: the goal side is only in
o_0. Measured (60k / 40k frames): seeds 0 / 1 / 2 first reach a greedy success >= 0.95 at 1,904 / 464 / 2,864
updates and end at 1.0 (seed 0's curve: docs/results/torchrl_dqn_tmaze10.csv). This runs seed 1 and
stops at its first evaluation at >= 0.95 (~15 s)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from tests.examples.test_examples_smoke import load_module

ROOT = Path(os.path.dirname(os.path.abspath(__file__))).parents[1]


def test_torchrl_dqn_with_our_transformer_solves_tmaze10():
    script = load_module(ROOT / "benchmarks" / "torchrl_dqn_tmaze.py", "torchrl_dqn_tmaze")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = script.train(horizon=10, seed=1, frames=30_000, stop_when_solved=True, quiet=True)
    assert out["final_success"] >= 0.95, out
