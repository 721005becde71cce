"""docs/swapping.md §7 learns: TorchRL's ClipPPOLoss and GAE(shifted=True) train an actor and a critic that share our
memory to solve T-Maze with a corridor of 1 (trials of 2 steps; the goal side is only in o_0, so a memory-free policy
succeeds half the time). The recipe's function is run as the page defines it. Measured on CPU (2 shared cores, 40
batches of 128 steps): greedy success 1.0 with seeds 0, 1 and 2, for the Transformer (11-18 s) and the GRU (11-16 s)."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tests.test_docs import blocks
from torchrl_amago.envs import TMaze, make_amago_env

ROOT = Path(__file__).resolve().parents[2]


def recipe() -> dict:
    """The namespace of the §7 block that defines ``ppo_on_memory``."""
    code = [c for info, c in blocks(ROOT / "docs" / "swapping.md") if info == "python" and "def ppo_on_memory" in c]
    assert len(code) == 1
    namespace: dict = {}
    exec(compile(code[0], "docs/swapping.md §7", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("encoder", ["transformer", pytest.param("gru", marks=pytest.mark.slow)])
def test_ppo_on_a_shared_memory_solves_tmaze(encoder):
    env = make_amago_env(TMaze(32, corridor_length=1, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actor = recipe()["ppo_on_memory"](env, 2, batches=40, encoder=encoder)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        trial = env.rollout(2, actor)
    success = trial["next", "reward"][:, -1].mean().item()  # goal_reward 1 on the goal side, 0 otherwise
    assert success >= 0.9, success
