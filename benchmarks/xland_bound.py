"""How much can any agent gain across attempts of `examples/11_xland_minigrid.py` (hidden-rule or one-pick rulesets)?

An informed agent sees the whole room (the real agent sees 5x5 in front of it) but not the hidden rule: in the first
attempt it walks to the nearer floor object and picks it up; if that was the wrong one it puts it back down (one step)
and walks to the other (with `--benchmark local-one-pick` a wrong pick ends the attempt unrewarded, so attempt 1
succeeds only when the nearer object is the right one). From the second attempt on it walks straight to the right
object. Walking is a shortest path over (cell, direction) with forward / turn moves around walls and objects. An
attempt succeeds when the right object is picked up within `--max_steps`; its reward is XLand's
`1 - 0.9 * steps / max_steps`. From attempt 2 on its success and return bound what an agent with the real (partial)
view can reach; in attempt 1 the nearer-first order is a good policy, not a searched optimum. Their difference is
about the largest gain the task allows.
Prints one JSON line; needs `.[xland]`.

    python benchmarks/xland_bound.py --grid_size 7 --max_steps 20 --num_distractors 1 --layouts 2000
    python benchmarks/xland_bound.py --benchmark local-one-pick
"""
from __future__ import annotations

import argparse
import json
from collections import deque

import numpy as np

MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # XLand's directions: up, right, down, left (clockwise)
WALKABLE = (1,)  # floor; every object and wall blocks


def steps_to_face(grid_tiles: np.ndarray, pos, direction: int, target) -> tuple[int, tuple, int]:
    """Fewest forward / turn actions from `(pos, direction)` until the agent stands next to `target` facing it.
    Returns ``(steps, pos, direction)``; ``steps`` is a large number when `target` cannot be reached."""
    h, w = grid_tiles.shape
    start = (tuple(int(x) for x in pos), int(direction))
    seen, queue = {start}, deque([(start, 0)])
    while queue:
        (p, d), n = queue.popleft()
        if (p[0] + MOVES[d][0], p[1] + MOVES[d][1]) == tuple(target):
            return n, p, d
        nxt = [(p, (d + 1) % 4), (p, (d - 1) % 4)]
        q = (p[0] + MOVES[d][0], p[1] + MOVES[d][1])
        if 0 <= q[0] < h and 0 <= q[1] < w and grid_tiles[q] in WALKABLE:
            nxt.append((q, d))
        for s in nxt:
            if s not in seen:
                seen.add(s)
                queue.append((s, n + 1))
    return 10 ** 6, start[0], start[1]


def attempt_steps(grid_tiles: np.ndarray, pos, direction: int, right, wrong: list, know_rule: bool,
                  one_pick: bool = False) -> int:
    """Actions until the right object is picked up: straight to it when the rule is known, else nearest object first,
    putting each wrong one back down where it was (one step) before walking on; a large number when `one_pick` and
    the first pick is wrong (the attempt failed)."""
    if know_rule:
        return steps_to_face(grid_tiles, pos, direction, right)[0] + 1
    total, todo = 0, sorted([tuple(right)] + [tuple(o) for o in wrong])  # ties: by cell, not by which is right
    while todo:
        costs = [steps_to_face(grid_tiles, pos, direction, o) for o in todo]
        i = min(range(len(todo)), key=lambda j: costs[j][0])
        n, pos, direction = costs[i]
        total += n + 1  # walk, pick up
        if todo[i] == tuple(right):
            return total
        if one_pick:
            return 10 ** 6
        total += 1  # put it back down in front (the cell it came from is free again)
        todo.pop(i)
    return total


def attempt_outcome(steps: int, max_steps: int) -> tuple[bool, float]:
    """XLand's reward for picking the goal up at step `steps` (0 past the time limit)."""
    ok = steps <= max_steps
    return ok, (1.0 - 0.9 * steps / max_steps) if ok else 0.0


def sample_layouts(n: int, grid_size: int, num_distractors: int, seed: int):
    """``n`` reset states of the local hidden-rule XLand env: (tiles, agent pos, agent dir, right pos, wrong pos)."""
    import jax

    from torchrl_amago.envs.libs.xland import XLandTrialEnv

    fenv = XLandTrialEnv.from_xminigrid(k_episodes=1, rooms=1, grid_size=grid_size,
                                        ruleset_benchmark="local-hidden-rule", num_distractors=num_distractors)
    reset = jax.jit(jax.vmap(lambda k: fenv.reset(k)[1]))
    state = reset(jax.random.split(jax.random.PRNGKey(seed), n))
    ts, rules = state["ts"], np.asarray(state["ruleset"].rules)
    grids, agent = np.asarray(ts.state.grid), ts.state.agent
    pos, dirs = np.asarray(agent.position), np.asarray(agent.direction)
    out = []
    for i in range(n):
        tiles, colors = grids[i, ..., 0], grids[i, ..., 1]
        objects = [tuple(c) for c in np.argwhere(~np.isin(tiles, (1, 2)))]
        right = [o for o in objects if (tiles[o], colors[o]) == tuple(rules[i, 0, 1:3])]
        if len(right) != 1:
            raise RuntimeError(f"layout {i}: expected one object that the rule turns into the goal, found {right}")
        out.append((tiles, pos[i], int(dirs[i]), right[0], [o for o in objects if o != right[0]]))
    return out


def per_attempt(steps: dict, max_steps: int) -> dict:
    """Mean success and return of the walks ``steps = {"attempt_1": [...], "attempt_2_on": [...]}`` (actions per
    layout), and the gain from attempt 1 to 2+."""
    res = {}
    for name in ("attempt_1", "attempt_2_on"):
        outs = [attempt_outcome(n, max_steps) for n in steps[name]]
        res[f"{name}_success"] = float(np.mean([o[0] for o in outs]))
        res[f"{name}_return"] = float(np.mean([o[1] for o in outs]))
    res["gain_success"] = res["attempt_2_on_success"] - res["attempt_1_success"]
    res["gain_return"] = res["attempt_2_on_return"] - res["attempt_1_return"]
    return res


def bound(layouts, max_steps: int, one_pick: bool = False) -> dict:
    """Per-attempt success and return of the informed agent: attempt 1 (rule unknown), attempt 2+ (rule known)."""
    return per_attempt({name: [attempt_steps(t, p, d, r, w, know, one_pick) for t, p, d, r, w in layouts]
                        for name, know in (("attempt_1", False), ("attempt_2_on", True))}, max_steps)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", choices=("local-hidden-rule", "local-one-pick"), default="local-hidden-rule",
                   help="the example's --benchmark (the layouts are the same; one-pick ends an attempt at its pick)")
    p.add_argument("--grid_size", type=int, default=7)
    p.add_argument("--max_steps", type=int, default=20)
    p.add_argument("--num_distractors", type=int, default=1)
    p.add_argument("--layouts", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    layouts = sample_layouts(a.layouts, a.grid_size, a.num_distractors, a.seed)
    out = {"benchmark": a.benchmark, "grid_size": a.grid_size, "max_steps": a.max_steps,
           "num_distractors": a.num_distractors, "layouts": a.layouts,
           **bound(layouts, a.max_steps, one_pick=a.benchmark == "local-one-pick")}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
