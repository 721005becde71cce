"""How much can any agent gain across attempts of a one-room BabyAI level (`examples/10_babyai.py`)?

Two scripted agents walk the layouts of unseen seeds, with minigrid's moves (turn left, turn right, forward):
- informed: knows where the target object is and takes a shortest path to face it (then picks it up on pickup
  levels). No attempt 2 returns more; an agent that remembers attempt 1 can match it.
- searching: sees what the real agent sees (the 7x7 square in front of it; in one room nothing inside hides a cell)
  and, until the target is in view, takes the first step of a shortest path to the pose that shows the most unseen
  cells per step of the way (ties: the nearer, then left turn, right turn, forward); then it walks as the informed
  one. It is a policy for attempt 1, so the Bayes-optimal attempt 1 returns at least as much.
Informed minus searching bounds from above the gain across attempts that the level allows. Returns are BabyAI's
`1 - 0.9 * steps / max_steps` (0 past `--max_steps`, the example's `--attempt_steps`).

`--hide_mission` (the example's `--hide_mission`): the mission is blank, so only reward tells which object is meant.
- PickupDistDebug: the target set is one of 15 equally likely ones (the level names one of its 5 objects by type,
  colour or both); a wrong pick ends the attempt. The Bayes-optimal success of each attempt is exact: an agent
  repeats a pick that succeeded, so its policy is the order of its first picks, and the bound takes the order with the
  most expected successes over `--k_episodes` attempts, among the objects it can pick up within `--max_steps`.
- GoToLocal: the level names one of its objects by type and colour (any object of that kind counts); facing one ends
  the attempt, facing another does not. The layout-aware agent sees the whole room but not the target: each attempt
  it walks to the objects still possible in the order with the best expected return (a success is walked to again;
  objects reached before a timeout are ruled out). A scripted yardstick, not an optimum: the real agent sees only 7x7
  ahead, and the walks ignore targets faced on the way to another object.
Prints one JSON line; needs `.[babyai]`.

    python benchmarks/babyai_bound.py --task BabyAI-OneRoomS12-v0 --max_steps 48 --layouts 2000
    python benchmarks/babyai_bound.py --task BabyAI-PickupDistDebug-v0 --hide_mission --max_steps 20 --layouts 2000
    python benchmarks/babyai_bound.py --task BabyAI-GoToLocalS8N4-v0 --hide_mission --max_steps 12 --layouts 2000
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections import deque

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xland_bound import per_attempt  # noqa: E402  (XLand's reward is BabyAI's)

MOVES = ((1, 0), (0, 1), (-1, 0), (0, -1))  # minigrid's directions over (x, y): right, down, left, up
LEFT, RIGHT, FORWARD, PICKUP, DONE = 0, 1, 2, 3, 6  # minigrid's action numbers
VIEW = 7  # minigrid's agent_view_size
PICKABLE = ("ball", "box", "key")
SELECT_BY = ("type", "color", "both")  # how PickupDist names its target object, each equally likely


def successors(walkable: np.ndarray, pose):
    """``(action, pose)`` reachable in one action from ``pose = ((x, y), direction)``, in tie-break order."""
    (x, y), d = pose
    yield LEFT, ((x, y), (d - 1) % 4)
    yield RIGHT, ((x, y), (d + 1) % 4)
    nx, ny = x + MOVES[d][0], y + MOVES[d][1]
    if 0 <= nx < walkable.shape[0] and 0 <= ny < walkable.shape[1] and walkable[nx, ny]:
        yield FORWARD, ((nx, ny), d)


def poses_by_distance(walkable: np.ndarray, start):
    """Every pose reachable from ``start``, nearest first, with the actions of a shortest path to it."""
    seen, queue = {start}, deque([(start, ())])
    while queue:
        pose, path = queue.popleft()
        yield pose, path
        for action, nxt in successors(walkable, pose):
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, path + (action,)))


def view(shape, pose) -> tuple[slice, slice]:
    """The cells (x, y) that minigrid shows an agent at ``pose``: 7 deep ahead (its own row included), 3 to each side."""
    (x, y), d = pose
    r, deep = VIEW // 2, VIEW - 1
    top_x, top_y = {0: (x, y - r), 1: (x - r, y), 2: (x - deep, y - r), 3: (x - r, y - deep)}[d]  # get_view_exts
    return (slice(max(top_x, 0), min(top_x + VIEW, shape[0])), slice(max(top_y, 0), min(top_y + VIEW, shape[1])))


def in_view(shape, pose, cell) -> bool:
    """Whether minigrid shows ``cell`` to an agent at ``pose`` (one room: nothing inside hides it)."""
    x, y = view(shape, pose)
    return x.start <= cell[0] < x.stop and y.start <= cell[1] < y.stop


def faces(pose, target) -> bool:
    (x, y), d = pose
    return (x + MOVES[d][0], y + MOVES[d][1]) == tuple(target)


def informed_actions(walkable: np.ndarray, pose, target, pickup: bool) -> list[int] | None:
    """A shortest action sequence from ``pose`` that faces the target and then picks it up (``pickup``) or, on a go-to
    level, ends there (`done` when already facing it: the level checks after an action). None if out of reach."""
    for p, path in poses_by_distance(walkable, pose):
        if faces(p, target):
            return list(path) + [PICKUP] if pickup else list(path) or [DONE]
    return None


def search_actions(walkable: np.ndarray, may_hold: np.ndarray, pose, target, pickup: bool,
                   max_steps: int) -> list[int] | None:
    """The searching agent's actions (module docstring) until it has the target; None if not within ``max_steps``.
    ``may_hold``: the cells where the target could be (every cell that is not a wall); the agent looks for unseen ones."""
    unseen, actions = may_hold.copy(), []
    while len(actions) <= max_steps:
        unseen[view(walkable.shape, pose)] = False
        if not unseen[tuple(target)]:
            rest = informed_actions(walkable, pose, target, pickup)
            return None if rest is None else actions + rest
        best, path = 0.0, None
        for p, way in poses_by_distance(walkable, pose):
            rate = unseen[view(walkable.shape, p)].sum() / len(way) if way else 0.0
            if rate > best:
                best, path = rate, way
        if path is None:  # nothing left to see and no target in view: the layout hides it
            return None
        actions.append(path[0])
        pose = next(nxt for a, nxt in successors(walkable, pose) if a == path[0])
    return None


def grid_cells(grid) -> tuple[list, np.ndarray]:
    """``(cells, walkable)`` of a minigrid grid: ``cells[x][y]`` its object (or None), where the agent can step."""
    cells = [[grid.get(x, y) for y in range(grid.height)] for x in range(grid.width)]
    return cells, np.array([[c is None or c.can_overlap() for c in col] for col in cells])


def layout(env):
    """``(walkable, may_hold, pose, target, pickup)`` of a reset one-room BabyAI env (``env.unwrapped``): where the
    agent can step, which cells are not walls, its pose, the one object its mission names, and whether to pick it up."""
    from minigrid.envs.babyai.core.verifier import GoToInstr, PickupInstr

    grid, instrs, name = env.grid, env.instrs, env.spec.id if env.spec else type(env).__name__
    if not isinstance(instrs, (GoToInstr, PickupInstr)) or len(instrs.desc.obj_poss) != 1:
        raise ValueError(f"{name}: the bound needs a 'go to' or 'pick up' mission with one matching object, got "
                         f"{env.mission!r}")
    cells, walkable = grid_cells(grid)
    may_hold = np.array([[c is None or c.type != "wall" for c in col] for col in cells])
    inner_walls = [tuple(int(v) for v in c) for c in np.argwhere(~may_hold[1:-1, 1:-1]) + 1]
    if inner_walls:
        raise ValueError(f"{name}: the bound covers one-room levels (walls inside would hide cells), found walls at "
                         f"{inner_walls[:3]}")
    pose = (tuple(int(v) for v in env.agent_pos), int(env.agent_dir))
    return walkable, may_hold, pose, tuple(int(v) for v in instrs.desc.obj_poss[0]), isinstance(instrs, PickupInstr)


def bound(task: str, layouts: int, first_seed: int, max_steps: int) -> dict:
    """Per-attempt success and return of the searching (attempt 1) and informed (attempt 2 on) agents."""
    from torchrl_amago.envs.libs.babyai import make_minigrid_env

    env = make_minigrid_env(task, max_steps=max_steps)
    walks = {"attempt_1": [], "attempt_2_on": []}
    for seed in range(first_seed, first_seed + layouts):
        env.reset(seed=seed)
        walkable, may_hold, pose, target, pickup = layout(env.unwrapped)
        for name, actions in (("attempt_1", search_actions(walkable, may_hold, pose, target, pickup, max_steps)),
                              ("attempt_2_on", informed_actions(walkable, pose, target, pickup))):
            walks[name].append(max_steps + 1 if actions is None else len(actions))
    env.close()
    return per_attempt(walks, max_steps)


def hidden_targets(objects, select_by=SELECT_BY) -> list[frozenset]:
    """The target sets a layout with ``objects`` (``(type, color)`` of each object) may have drawn, one per (named
    object, way of naming it in ``select_by``), each equally likely: the indices of the objects that match the name.
    PickupDist names by type, colour or both; GoToLocal by both (``("both",)``)."""
    return [frozenset(i for i, (ty, co) in enumerate(objects)
                      if (by == "color" or ty == named_ty) and (by == "type" or co == named_co))
            for named_ty, named_co in objects for by in select_by]


def best_pick_order(objects, k: int, can_pick=None) -> tuple[tuple[int, ...], list[float]]:
    """``(order, success per attempt)`` of the Bayes-optimal agent over ``k`` attempts when the mission is hidden:
    attempt j succeeds when one of its first j picks is a target (a success is repeated), and ``order``, of the
    objects in ``can_pick`` (default: all), maximises the expected successes (the first such order)."""
    targets = hidden_targets(objects)
    can_pick = range(len(objects)) if can_pick is None else sorted(can_pick)
    best_order, best = (), [0.0] * k
    for order in itertools.permutations(can_pick, min(k, len(can_pick))):
        hit = [float(np.mean([bool(t.intersection(order[:j + 1])) for t in targets])) for j in range(k)]
        if not best_order or sum(hit) > sum(best) + 1e-12:
            best_order, best = order, hit
    return best_order, best


HIDDEN_LEVELS = {"PickupDist": SELECT_BY, "GoToLocal": ("both",)}  # level class -> how it names its target


def hidden_objects(env):
    """``(walkable, pose, objects, cells)`` of a reset PickupDistDebug or GoToLocal env (``env.unwrapped``): ``objects``
    the ``(type, color)`` of every pickable object, ``cells`` where each lies."""
    name = env.spec.id if env.spec else type(env).__name__
    if type(env).__name__ not in HIDDEN_LEVELS or (type(env).__name__ == "PickupDist" and not env.debug):
        raise ValueError(f"{name}: --hide_mission covers BabyAI-PickupDistDebug-v0 (a wrong pick ends the attempt) "
                         "and the BabyAI-GoToLocal levels")
    grid, walkable = grid_cells(env.grid)
    cells = [(x, y) for x, col in enumerate(grid) for y, c in enumerate(col) if c is not None and c.type in PICKABLE]
    objects = [(grid[x][y].type, grid[x][y].color) for x, y in cells]
    return walkable, (tuple(int(v) for v in env.agent_pos), int(env.agent_dir)), objects, cells


def walk_to_face(walkable: np.ndarray, pose, cell):
    """``(steps, pose)`` of a shortest walk from ``pose`` to face ``cell`` (at least one action: GoTo levels check
    after an action); ``(None, None)`` if out of reach."""
    acts = informed_actions(walkable, pose, cell, pickup=False)
    if acts is None:
        return None, None
    for a in acts:
        if a != DONE:
            pose = next(nxt for act, nxt in successors(walkable, pose) if act == a)
    return len(acts), pose


def visit_times(walkable: np.ndarray, pose, cells, order) -> dict[int, int]:
    """Steps after which an agent walking to face ``cells[i]`` for each ``i`` of ``order`` in turn arrives (objects
    out of reach end the walk)."""
    times, t = {}, 0
    for i in order:
        steps, pose = walk_to_face(walkable, pose, cells[i])
        if steps is None:
            break
        t += steps
        times[i] = t
    return times


def goto_returns(walkable: np.ndarray, pose, cells, targets, k: int, max_steps: int) -> tuple[list, list]:
    """Per-attempt mean (return, success) of the layout-aware agent (module docstring) over the equally likely
    ``targets`` of a GoToLocal layout with the mission hidden."""
    reward = lambda t: 1 - 0.9 * t / max_steps if t is not None and t <= max_steps else 0.0  # noqa: E731
    first = lambda times, t: min((times[i] for i in t if i in times), default=None)  # noqa: E731
    orders = {}

    def best_order(alive):  # the visit order with the best expected return over the target sets still possible
        if alive not in orders:
            objs = sorted(set().union(*alive))
            orders[alive] = max((visit_times(walkable, pose, cells, o) for o in itertools.permutations(objs)),
                                key=lambda times: sum(reward(first(times, t)) for t in alive))
        return orders[alive]

    returns, successes = np.zeros(k), np.zeros(k)
    for truth in targets:
        alive, found = frozenset(targets), None
        for j in range(k):
            times = {i: walk_to_face(walkable, pose, cells[i])[0] for i in found} if found else best_order(alive)
            hit = first({i: t for i, t in times.items() if t is not None}, truth)
            returns[j] += reward(hit)
            successes[j] += reward(hit) > 0
            if reward(hit) > 0:
                found = truth
            else:
                reached = {i for i, t in times.items() if t is not None and t <= max_steps}
                alive = frozenset(t for t in alive if not t & reached)
    return list(returns / len(targets)), list(successes / len(targets))


def hidden_bound(task: str, layouts: int, first_seed: int, max_steps: int, k: int) -> dict:
    """Per-attempt success (and on GoToLocal, return) with the mission hidden (module docstring), over unseen
    layouts."""
    from torchrl_amago.envs.libs.babyai import make_minigrid_env

    env = make_minigrid_env(task, max_steps=max_steps)
    returns, hits = [], []
    for seed in range(first_seed, first_seed + layouts):
        env.reset(seed=seed)
        walkable, pose, objects, cells = hidden_objects(env.unwrapped)
        level = type(env.unwrapped).__name__
        if level == "GoToLocal":
            ret, hit = goto_returns(walkable, pose, cells, hidden_targets(objects, HIDDEN_LEVELS[level]), k, max_steps)
            returns.append(ret)
        else:
            walks = [informed_actions(walkable, pose, c, pickup=True) for c in cells]
            hit = best_pick_order(objects, k, [i for i, w in enumerate(walks) if w and len(w) <= max_steps])[1]
        hits.append(hit)
    env.close()
    out = {}
    for name, per in (("return", returns), ("success", hits)):
        if per:
            mean = np.mean(per, axis=0)
            out.update({f"attempt_{j + 1}_{name}": round(float(v), 5) for j, v in enumerate(mean)})
            out[f"gain_{name}"] = round(float(mean[-1] - mean[0]), 5)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="BabyAI-OneRoomS12-v0", help="a one-room BabyAI level with one target object")
    p.add_argument("--max_steps", type=int, default=48, help="steps per attempt (the example's --attempt_steps)")
    p.add_argument("--layouts", type=int, default=2000, help="layouts, one per seed")
    p.add_argument("--first_seed", type=int, default=5001,
                   help="seed of the first layout (5001: the first the example's default --train_seeds leaves unseen)")
    p.add_argument("--hide_mission", action="store_true",
                   help="the best success per attempt with the mission hidden (PickupDistDebug, GoToLocal levels)")
    p.add_argument("--k_episodes", type=int, default=None, help="attempts per trial (with --hide_mission; default: 2)")
    a = p.parse_args(argv)
    if a.k_episodes is not None and not a.hide_mission:
        p.error("--k_episodes needs --hide_mission (the walking bound compares attempt 1 with any later one)")
    a.k_episodes = 2 if a.k_episodes is None else a.k_episodes
    if a.max_steps < 1 or a.layouts < 1 or a.k_episodes < 1:
        p.error(f"--max_steps, --layouts and --k_episodes must be positive, got {a.max_steps}, {a.layouts} and "
                f"{a.k_episodes}")
    out = {"task": a.task, "max_steps": a.max_steps, "layouts": a.layouts, "first_seed": a.first_seed}
    if a.hide_mission:
        out.update(hide_mission=True, k_episodes=a.k_episodes,
                   **hidden_bound(a.task, a.layouts, a.first_seed, a.max_steps, a.k_episodes))
    else:
        out.update(bound(a.task, a.layouts, a.first_seed, a.max_steps))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
