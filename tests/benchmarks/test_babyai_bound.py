"""benchmarks/babyai_bound.py: the scripted agents' walks, counted by hand on made-up rooms (no minigrid needed), and
checked against the real BabyAI env (its view, reward and end of attempt) when minigrid is installed."""
import os
from pathlib import Path

import numpy as np
import pytest

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RIGHT_, DOWN_, LEFT_, UP_ = 0, 1, 2, 3  # minigrid directions


def _bound():
    return load_module(Path(ROOT) / "benchmarks" / "babyai_bound.py", "babyai_bound")


def _room(width: int, height: int, target):
    """Walls around a floor of (width - 2) x (height - 2); the target object blocks its cell."""
    may_hold = np.zeros((width, height), dtype=bool)
    may_hold[1:-1, 1:-1] = True
    walkable = may_hold.copy()
    walkable[target] = False
    return walkable, may_hold


def test_searching_agent_heads_where_most_is_unseen_per_step():
    """A one-row corridor x = 1..19, the agent at x = 10 facing up (it sees x = 7..13), the ball at x = 19.
    Turning either way shows 3 unseen cells for 1 step: it turns left (x = 4..10). Then the 3 cells left of x = 4 cost
    a step each, while turning round (2 steps) shows 14..16: it turns round, walks while each step shows one more cell
    (x = 11, 12, 13; the ball in view at 13), on to 18, picks up: 3 + 3 + 5 + 1 = 12 actions. The informed agent:
    turn right, 8 forward, pick up = 10."""
    b = _bound()
    walkable, may_hold = _room(21, 3, (19, 1))
    start = ((10, 1), UP_)
    informed = b.informed_actions(walkable, start, (19, 1), pickup=True)
    assert informed == [b.RIGHT] + [b.FORWARD] * 8 + [b.PICKUP]
    search = b.search_actions(walkable, may_hold, start, (19, 1), pickup=True, max_steps=48)
    assert search == [b.LEFT] * 3 + [b.FORWARD] * 8 + [b.PICKUP]
    out = b.per_attempt({"attempt_1": [len(search)], "attempt_2_on": [len(informed)]}, 48)
    assert out["attempt_1_return"] == pytest.approx(1 - 0.9 * 12 / 48)
    assert out["gain_return"] == pytest.approx(0.9 * 2 / 48)
    assert b.per_attempt({"attempt_1": [12], "attempt_2_on": [10]}, 11)["attempt_1_success"] == 0.0  # past the limit
    assert b.search_actions(walkable, may_hold, start, (19, 1), pickup=True, max_steps=5) is None


def test_target_in_view_at_the_start_costs_no_search_and_go_to_ends_facing_it():
    b = _bound()
    walkable, may_hold = _room(8, 8, (5, 3))
    start = ((2, 3), RIGHT_)  # the ball 3 cells ahead, in view
    assert b.search_actions(walkable, may_hold, start, (5, 3), True, 48) == [b.FORWARD, b.FORWARD, b.PICKUP]
    assert b.informed_actions(walkable, start, (5, 3), pickup=False) == [b.FORWARD, b.FORWARD]
    assert b.informed_actions(walkable, ((4, 3), RIGHT_), (5, 3), pickup=False) == [b.DONE]  # already facing it


def test_view_is_minigrids_square_clipped_to_the_grid():
    b = _bound()
    shape = (12, 12)
    assert b.view(shape, ((5, 5), RIGHT_)) == (slice(5, 12), slice(2, 9))
    assert b.view(shape, ((5, 5), DOWN_)) == (slice(2, 9), slice(5, 12))
    assert b.view(shape, ((5, 5), LEFT_)) == (slice(0, 6), slice(2, 9))
    assert b.view(shape, ((1, 1), UP_)) == (slice(0, 5), slice(0, 2))
    assert b.in_view(shape, ((5, 5), RIGHT_), (11, 8)) and not b.in_view(shape, ((5, 5), RIGHT_), (4, 5))


def test_search_never_beats_the_informed_walk_and_ends_facing_the_target():
    b = _bound()
    rng = np.random.default_rng(0)
    for _ in range(40):
        target = tuple(int(v) for v in rng.integers(1, 9, size=2))
        walkable, may_hold = _room(10, 10, target)
        free = np.argwhere(walkable)
        start = (tuple(int(v) for v in free[rng.integers(len(free))]), int(rng.integers(4)))
        informed = b.informed_actions(walkable, start, target, pickup=True)
        search = b.search_actions(walkable, may_hold, start, target, pickup=True, max_steps=200)
        assert len(search) >= len(informed)
        pose = start
        for a in search[:-1]:
            pose = next(nxt for act, nxt in b.successors(walkable, pose) if act == a)
        assert b.faces(pose, target) and search[-1] == b.PICKUP


def test_walks_match_the_real_env():
    """On real OneRoomS12 layouts: the target is in the modelled view exactly when minigrid shows it, and replaying
    either agent's actions ends the attempt on the last action with the reward the bound counts."""
    pytest.importorskip("minigrid")
    from torchrl_amago.envs.libs.babyai import make_minigrid_env

    b = _bound()
    env = make_minigrid_env("BabyAI-OneRoomS12-v0", max_steps=48)
    searched = 0
    for seed in range(5001, 5031):
        for agent in ("search", "informed"):
            env.reset(seed=seed)
            u = env.unwrapped
            walkable, may_hold, pose, target, pickup = b.layout(u)
            acts = (b.search_actions(walkable, may_hold, pose, target, pickup, 48) if agent == "search"
                    else b.informed_actions(walkable, pose, target, pickup))
            total = 0.0
            for i, a in enumerate(acts):
                if not u.carrying:
                    here = ((int(u.agent_pos[0]), int(u.agent_pos[1])), int(u.agent_dir))
                    assert b.in_view(walkable.shape, here, target) == u.agent_sees(*target)
                _, r, term, trunc, _ = env.step(a)
                total += r
                assert (term or trunc) == (i == len(acts) - 1)
            assert term and total == pytest.approx(1 - 0.9 * len(acts) / 48)
            searched += agent == "search" and len(acts) > len(b.informed_actions(walkable, pose, target, pickup))
    assert searched > 0  # some layouts hide the ball at the start
    env.close()


def test_main_prints_the_bound_and_refuses_rooms_it_does_not_cover():
    pytest.importorskip("minigrid")
    b = _bound()
    out = b.main(["--layouts", "20", "--max_steps", "48"])
    assert out["attempt_2_on_success"] == 1.0
    assert out["attempt_2_on_return"] >= out["attempt_1_return"] > 0.5
    assert out["gain_return"] == pytest.approx(out["attempt_2_on_return"] - out["attempt_1_return"])
    with pytest.raises(ValueError, match="one-room levels"):
        b.main(["--task", "BabyAI-GoToObjMaze-v0", "--layouts", "1"])
    with pytest.raises(SystemExit):
        b.main(["--layouts", "0"])


def test_hidden_mission_targets_and_best_pick_order_by_hand():
    """Red ball, blue ball, green key. Named by type, colour or both (9 equally likely target sets): the red ball is a
    target in 4 (red ball x 3, blue ball by type), the blue ball in 4, the key in 3. Picking the red ball, then the
    key, hits 4 and then 7 of the 9 (two balls first: 6); only the key allowed: 3 and 3."""
    b = _bound()
    objects = [("ball", "red"), ("ball", "blue"), ("key", "green")]
    targets = b.hidden_targets(objects)
    assert len(targets) == 9 and sorted(map(sorted, set(targets))) == [[0], [0, 1], [1], [2]]
    order, hit = b.best_pick_order(objects, 2)
    assert order == (0, 2) and hit == pytest.approx([4 / 9, 7 / 9])
    assert b.best_pick_order(objects, 3)[1] == pytest.approx([4 / 9, 7 / 9, 1.0])
    assert b.best_pick_order(objects, 2, can_pick=[2]) == ((2,), pytest.approx([3 / 9, 3 / 9]))


def test_hidden_mission_model_is_the_real_levels():
    """On real PickupDistDebug layouts: the level's own target set is one of `hidden_targets`; how often an object is a
    target matches the model's equal-odds prediction; picking up any object ends the attempt, with reward exactly when
    it is a target."""
    pytest.importorskip("minigrid")
    from torchrl_amago.envs.libs.babyai import make_minigrid_env

    b = _bound()
    env = make_minigrid_env("BabyAI-PickupDistDebug-v0", max_steps=20)
    predicted, seen, picked = [], [], 0
    for seed in range(5001, 5301):
        env.reset(seed=seed)
        u = env.unwrapped
        walkable, pose, objects, cells = b.hidden_objects(u)
        truth = frozenset(i for i, c in enumerate(cells) if any(o is u.grid.get(*c) for o in u.instrs.desc.obj_set))
        assert truth in b.hidden_targets(objects)
        predicted.append(np.mean([0 in t for t in b.hidden_targets(objects)]))
        seen.append(0 in truth)
        i = seed % len(cells)
        acts = b.informed_actions(walkable, pose, cells[i], pickup=True)
        if acts is not None:
            picked += 1
            for n, a in enumerate(acts):
                _, r, term, trunc, _ = env.step(a)
                assert (term or trunc) == (n == len(acts) - 1)
            assert term and (r > 0) == (i in truth)
    assert picked > 200
    assert abs(np.mean(predicted) - np.mean(seen)) < 3 * np.sqrt(np.mean(predicted) * (1 - np.mean(predicted)) / 300)
    env.close()


def test_main_hide_mission_prints_the_bayes_success_and_refuses_other_levels():
    pytest.importorskip("minigrid")
    b = _bound()
    out = b.main(["--task", "BabyAI-PickupDistDebug-v0", "--hide_mission", "--max_steps", "20", "--layouts", "30",
                  "--k_episodes", "3"])
    assert 0.2 < out["attempt_1_success"] < out["attempt_2_success"] < out["attempt_3_success"] <= 1.0
    assert out["gain_success"] == pytest.approx(out["attempt_3_success"] - out["attempt_1_success"], abs=1e-4)
    out = b.main(["--task", "BabyAI-GoToLocalS8N4-v0", "--hide_mission", "--max_steps", "12", "--layouts", "10"])
    assert 0.2 < out["attempt_1_return"] < out["attempt_2_return"] < 1.0 and out["attempt_2_success"] > 0.9
    for task in ("BabyAI-PickupDist-v0", "BabyAI-OneRoomS12-v0"):
        with pytest.raises(ValueError, match="PickupDistDebug"):
            b.main(["--task", task, "--hide_mission", "--layouts", "1"])
    with pytest.raises(SystemExit):
        b.main(["--k_episodes", "3", "--layouts", "1"])  # the walking bound has no attempts to count


def test_hidden_go_to_layout_aware_agent_by_hand():
    """A corridor x = 1..9 with a ball at each end (x = 1, x = 9), the agent at x = 3 facing right. Facing the left
    ball takes 3 actions (turn, turn, forward), the right one 5, and one from the other 8. With 12 steps it visits left
    then right (returns .775 and .175, mean .475; right first: .625 and 0) and walks straight in attempt 2 (.775,
    .625). With 10 steps the right ball is out of time in attempt 1 (success .5); a timeout after facing the left one
    rules it out, so attempt 2 walks right (.55)."""
    b = _bound()
    walkable = np.zeros((11, 3), dtype=bool)
    walkable[2:9, 1] = True
    cells, pose = [(1, 1), (9, 1)], ((3, 1), RIGHT_)
    assert b.walk_to_face(walkable, pose, cells[0]) == (3, ((2, 1), LEFT_))
    assert b.visit_times(walkable, pose, cells, (0, 1)) == {0: 3, 1: 11}
    targets = b.hidden_targets([("ball", "red"), ("ball", "blue")], ("both",))
    assert targets == [frozenset({0}), frozenset({1})]
    ret, hit = b.goto_returns(walkable, pose, cells, targets, 2, 12)
    assert ret == pytest.approx([(0.775 + 0.175) / 2, (0.775 + 0.625) / 2]) and hit == pytest.approx([1.0, 1.0])
    ret, hit = b.goto_returns(walkable, pose, cells, targets, 2, 10)
    assert ret == pytest.approx([0.73 / 2, (0.73 + 0.55) / 2]) and hit == pytest.approx([0.5, 1.0])
    same = b.hidden_targets([("ball", "red"), ("ball", "red")], ("both",))  # either ball is the target
    assert same == [frozenset({0, 1})] * 2
    assert b.goto_returns(walkable, pose, cells, same, 2, 12)[0] == pytest.approx([0.775, 0.775])


def test_hidden_go_to_model_is_the_real_level():
    """On real GoToLocalS8N4 layouts: the level's own target set is one of `hidden_targets(.., ("both",))`, and
    walking to the objects in turn ends the attempt exactly on facing the first target, with the reward counted."""
    pytest.importorskip("minigrid")
    from torchrl_amago.envs.libs.babyai import make_minigrid_env

    b = _bound()
    env = make_minigrid_env("BabyAI-GoToLocalS8N4-v0", max_steps=64)
    for seed in range(5001, 5041):
        env.reset(seed=seed)
        u = env.unwrapped
        walkable, pose, objects, cells = b.hidden_objects(u)
        truth = frozenset(i for i, c in enumerate(cells) if any(o is u.grid.get(*c) for o in u.instrs.desc.obj_set))
        assert truth in b.hidden_targets(objects, ("both",))
        order = list(range(len(cells)))[::-1] if seed % 2 else list(range(len(cells)))
        times = b.visit_times(walkable, pose, cells, order)
        end = min(times[i] for i in truth)
        steps, total, term = 0, 0.0, False
        for i in order:
            for a in b.informed_actions(walkable, (tuple(int(v) for v in u.agent_pos), int(u.agent_dir)), cells[i],
                                        pickup=False):
                _, r, term, trunc, _ = env.step(a)
                steps, total = steps + 1, total + r
                if term or trunc:
                    break
            if term or trunc:
                break
        assert term and steps == end and total == pytest.approx(1 - 0.9 * end / 64)
    env.close()
