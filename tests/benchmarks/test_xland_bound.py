"""benchmarks/xland_bound.py: the informed agent's shortest walks, checked on hand-made rooms (no JAX needed), and the
sampled layouts of the real env when xminigrid is installed."""
import os
from pathlib import Path

import numpy as np
import pytest

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def _bound():
    return load_module(Path(ROOT) / "benchmarks" / "xland_bound.py", "xland_bound")


def _room(objects=()):
    """5x5 room: walls (2) around a 3x3 floor (1); objects (3 = ball) at the given cells."""
    t = np.full((5, 5), 2)
    t[1:4, 1:4] = 1
    for o in objects:
        t[o] = 3
    return t


def test_steps_to_face_counts_turns_and_moves():
    b = _bound()
    room = _room([(1, 3)])
    assert b.steps_to_face(room, (1, 2), RIGHT, (1, 3))[0] == 0  # already facing it
    assert b.steps_to_face(room, (1, 2), LEFT, (1, 3))[0] == 2  # turn around
    # from (3,1) facing up: forward to (2,1), (1,1), turn right, forward to (1,2), now facing (1,3): 4 actions
    assert b.steps_to_face(room, (3, 1), UP, (1, 3))[0] == 4
    walled = _room([(1, 3), (2, 3), (2, 2), (1, 2)])  # the target (1,3) boxed in by other objects and walls
    assert b.steps_to_face(walled, (3, 1), UP, (1, 3))[0] >= 10 ** 6


def test_attempt_steps_nearest_first_and_put_back():
    b = _bound()
    room = _room([(1, 1), (1, 3)])
    near_wrong = b.attempt_steps(room, (1, 2), LEFT, right=(1, 3), wrong=[(1, 1)], know_rule=False)
    # facing the wrong one: pick (1) + put back (1) + turn around (2) + pick (1)
    assert near_wrong == 5
    assert b.attempt_steps(room, (1, 2), LEFT, right=(1, 3), wrong=[(1, 1)], know_rule=True) == 3  # turn twice, pick
    assert b.attempt_steps(room, (1, 2), RIGHT, right=(1, 3), wrong=[(1, 1)], know_rule=False) == 1
    # one pick: the wrong one first fails the attempt; the right one first is the same walk
    assert b.attempt_steps(room, (1, 2), LEFT, right=(1, 3), wrong=[(1, 1)], know_rule=False, one_pick=True) >= 10 ** 6
    assert b.attempt_steps(room, (1, 2), RIGHT, right=(1, 3), wrong=[(1, 1)], know_rule=False, one_pick=True) == 1
    assert b.attempt_outcome(5, 20) == (True, pytest.approx(1 - 0.9 * 5 / 20))
    assert b.attempt_outcome(21, 20) == (False, 0.0)


def test_bound_on_hand_made_layouts():
    b = _bound()
    room = _room([(1, 1), (1, 3)])
    layouts = [(room, (1, 2), LEFT, (1, 3), [(1, 1)]), (room, (1, 2), RIGHT, (1, 3), [(1, 1)])]
    res = b.bound(layouts, max_steps=4)
    assert res["attempt_1_success"] == 0.5  # 5 steps > 4 when the near one is wrong
    assert res["attempt_2_on_success"] == 1.0
    assert res["gain_success"] == 0.5
    assert res["attempt_2_on_return"] == pytest.approx(((1 - 0.9 * 3 / 4) + (1 - 0.9 / 4)) / 2)


def test_sampled_layouts_of_the_real_env():
    pytest.importorskip("xminigrid")
    b = _bound()
    layouts = b.sample_layouts(50, grid_size=7, num_distractors=2, seed=0)
    assert len(layouts) == 50
    for tiles, pos, d, right, wrong in layouts:
        assert len(wrong) == 2 and tiles[tuple(pos)] == 1
    res = b.bound(layouts, max_steps=200)
    assert res["attempt_1_success"] == res["attempt_2_on_success"] == 1.0
    assert res["gain_return"] > 0
    one = b.bound(layouts, max_steps=200, one_pick=True)  # the nearest of 3 objects is right about a third of the time
    assert 0.15 < one["attempt_1_success"] < 0.5 and one["attempt_2_on_success"] == 1.0
    assert one["attempt_2_on_return"] == res["attempt_2_on_return"]
