"""benchmarks/lake_attempts.py: attempt-by-attempt outcomes on Meta-Frozen-Lake, checked with a memoryless scripted
policy whose every attempt is the same walk (so each later attempt repeats the first one's outcome exactly)."""
import os
from pathlib import Path

import pytest
import torch

from tests.examples.test_examples_smoke import load_module
from torchrl_amago.envs import MetaFrozenLake, make_amago_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALK = [1, 1, 1, 3, 3, 3]  # down three rows, then right three columns: the goal of a 4x4 lake, or a hole on the way
CELLS = [(1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (3, 3)]  # the cells it steps on


def _script():
    return load_module(Path(ROOT) / "benchmarks" / "lake_attempts.py", "lake_attempts")


def _same_walk(env):
    base = env.base_env

    def act(td):
        step = base.ep_steps.clamp(max=len(WALK) - 1)
        td["action"] = torch.nn.functional.one_hot(torch.tensor(WALK)[step], base.n_actions).float()
        return td

    return act


def test_a_memoryless_walk_repeats_every_outcome():
    env = make_amago_env(MetaFrozenLake(64, size=4, k_episodes=3))
    env.set_seed(0)
    trials = _script().record_trials(env, _same_walk(env), 6 * 3 * 3)
    assert len(trials) >= 64 * 3  # an attempt ends within six steps (at the goal or a hole on the walk)
    for t in trials:
        assert len(t) == 3 and len({a["success"] for a in t}) == 1 and len({a["hole"] for a in t}) == 1
        for a in t:
            assert (a["hole"] is None) == a["success"]
            assert a["cells"] == set(CELLS[: CELLS.index(a["hole"] or CELLS[-1]) + 1])
    out = _script().summarize(trials)
    first = out["success"][0]
    assert 0 < first < 1 and out["success"] == [first] * 3
    assert out["after_success"] == 1.0 and out["after_hole"] == 0.0 and out["same_hole_again"] == 1.0
    assert out["known_hole_steps"] == round(1 - first, 3)


def test_summary_of_hand_made_trials():
    win, hole_a, hole_b = ({"success": True, "hole": None, "cells": {(1, 0), (3, 3)}},
                           {"success": False, "hole": (1, 1), "cells": {(1, 0), (1, 1)}},
                           {"success": False, "hole": (0, 2), "cells": {(0, 1), (0, 2)}})
    out = _script().summarize([[hole_a, hole_b, win], [win, hole_a, hole_a]])
    assert out["success"] == [0.5, 0.0, 0.5]
    assert out["after_success"] == 0.0  # win -> hole_a
    assert out["after_hole"] == round(1 / 3, 3)  # hole_a -> hole_b, hole_b -> win, hole_a -> hole_a
    assert out["same_hole_again"] == round(1 / 3, 3)
    assert out["known_hole_steps"] == 0.25  # only the last attempt of the second trial steps on a known hole


def test_no_finished_trial_is_a_clear_error():
    with pytest.raises(ValueError, match="no trial finished"):
        _script().summarize([])


def test_refuses_a_lake_that_is_not_deterministic():
    env = make_amago_env(MetaFrozenLake(2, size=4, k_episodes=2, slip_chance=0.1))
    with pytest.raises(ValueError, match="deterministic"):
        _script().record_trials(env, _same_walk(env), 4)
