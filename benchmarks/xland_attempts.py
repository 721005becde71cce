"""Does a trained XLand hidden-rule agent choose by what attempt 1 revealed? Which object it picks, attempt by attempt.

Loads the weights of a finished `examples/11_xland_minigrid.py` run on `local-hidden-rule` or `local-one-pick`
(`--run DIR`, its `ckpts/<--ckpt>.pt`, read without unpickling), acts in its eval envs and records every attempt's
first pickup of a floor object: the right one (it turns into the goal: success), a wrong one, or none. Prints one
JSON line:
- `episode_<k>`: shares of attempts whose first pick was right / wrong / none;
- `after_<right|wrong>`: attempt k+1's first pick after attempt k's first pick was right or wrong: the same object
  again or another, right or wrong. An agent that remembers takes the same object after a right pick and another one
  after a wrong pick; one that does not takes the same object equally often after both;
- `q_pick_up`: the critic's value of picking up (return units, the acting discount, the critics' mean) wherever the
  agent faces a floor object with an empty pocket in a later attempt, by the previous attempt's first pick and by
  whether the faced object is the right one, with the share of those steps where the agent did pick up. Picking up
  the right object earns the same reward after either outcome: a critic that reads its memory values it alike after a
  right and a wrong previous pick.
Objects are told apart by (tile, color), as XLand does; the example draws a new layout for every attempt, so "the
same" is the same kind of object, not the same cell.

    python benchmarks/xland_attempts.py --run runs/xland -- --num_distractors 1 --max_steps 20
Flags after `--` go to the example and must build the same model and env as the run's; `--same_layout` replays a run
of `benchmarks/xland_same_layout.py` (every attempt on the trial's first layout).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections import Counter

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import attempts_parser, load_example, split_argv, trained_policy  # noqa: E402
from xland_bound import MOVES  # noqa: E402  (XLand's directions over (row, col))

from torchrl_amago.envs.libs.xland import _PICKABLE as PICKABLE  # noqa: E402  (the local rulesets' objects)

PICK_UP = 3  # XLand's pick-up action


def can_pick(front, holding: bool) -> bool:
    """Whether a pick-up now picks something: the agent faces a floor object and its pocket is empty."""
    return front[0] in PICKABLE and not holding


def first_picks(steps) -> dict:
    """``{(slot, trial, attempt): (object, right) or None}`` from per-step records ``(slot, trial, attempt, front,
    action, right, holding, q_pick_up)``: ``front`` the (tile, color) the agent faces before acting, ``right`` whether
    it is the object the rule turns into the goal, ``holding`` whether the agent's pocket is full, ``q_pick_up`` the
    critic's value of picking up there. The first pick of an attempt is its first pick-up action that picks
    something; None: the attempt picked nothing."""
    out: dict = {}
    for slot, trial, attempt, front, action, right, holding, _ in steps:
        key = (slot, trial, attempt)
        out.setdefault(key, None)
        if out[key] is None and action == PICK_UP and can_pick(front, holding):
            out[key] = (tuple(front), bool(right))
    return out


def pick_up_values(steps, picks: dict) -> dict:
    """Mean ``q_pick_up`` of the records (`first_picks`') where the agent can pick something in an attempt after one
    that picked, keyed ``"after_<right|wrong>/faces_<right|wrong>"``, with the share of them where it picked up and
    their counts (rounded to 3 places)."""
    cells: dict[str, list] = {}
    for slot, trial, attempt, front, action, right, holding, q in steps:
        before = picks.get((slot, trial, attempt - 1))
        if before is not None and can_pick(front, holding):
            key = f"after_{'right' if before[1] else 'wrong'}/faces_{'right' if right else 'wrong'}"
            cells.setdefault(key, []).append((q, action == PICK_UP))
    return {k: {"mean": round(float(np.mean([q for q, _ in v])), 3),
                "picked": round(float(np.mean([p for _, p in v])), 3), "steps": len(v)}
            for k, v in sorted(cells.items())}


def choice_report(picks: dict, k_episodes: int) -> dict:
    """The module docstring's report from `first_picks`' dict (rates rounded to 3 places, with their counts)."""
    report = {}
    for k in range(k_episodes):
        got = [p for key, p in picks.items() if key[2] == k]
        if got:
            c = Counter("none" if p is None else "right" if p[1] else "wrong" for p in got)
            report[f"episode_{k}"] = {**{o: round(c[o] / len(got), 3) for o in ("right", "wrong", "none")},
                                      "attempts": len(got)}
    after: dict[str, Counter] = {"right": Counter(), "wrong": Counter()}
    for (slot, trial, k), p in picks.items():
        before = picks.get((slot, trial, k - 1))  # None also for attempt 1 and where k - 1 picked nothing
        if before is None:
            continue
        if p is None:
            after["right" if before[1] else "wrong"]["none"] += 1
        else:
            which = ("same_" if p[0] == before[0] else "other_") + ("right" if p[1] else "wrong")
            after["right" if before[1] else "wrong"][which] += 1
    for outcome, c in after.items():
        n = sum(c.values())
        if n:
            report[f"after_{outcome}"] = {**{w: round(x / n, 3) for w, x in sorted(c.items())}, "attempts": n}
    return report


def rollout(env, policy, steps: int, loss=None) -> list:
    """`env.rollout(steps)` of the example's eval env (a `make_amago_env(make_xland_env(...))`) acting with
    `policy`; returns `first_picks`' per-step records, read from the env's state before each action, of every trial
    that ended within the rollout. `q_pick_up` is read from `loss`'s critics (an `AMAGOLoss` with per-action
    critics) on the state embedding the policy's actor head reads (NaN without `loss`)."""
    base, n = env.base_env, env.batch_size[0]
    records, trial, last = [], np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    seen = []
    hook = None if loss is None else policy.actor_head.register_forward_hook(
        lambda m, a, out: seen.append(a[0].detach().reshape(n, -1)))

    def q_pick_up(s):
        if s is None:
            return np.full(n, np.nan)
        q = loss._critic(loss.critic_head_params, s).float().transpose(-1, -2)  # [n, C, A, G]
        if loss.use_popart:
            q = loss.popart(q, normalized=False)
        return (q.mean(1)[:, PICK_UP, -1] / loss.reward_multiplier).cpu().numpy()  # the acting discount is last

    def act(td):
        state = base._state
        agent = state["ts"].state.agent
        pos, direction = np.asarray(agent.position), np.asarray(agent.direction)
        grid, pocket = np.asarray(state["ts"].state.grid), np.asarray(agent.pocket)
        attempt = np.asarray(state["count"]).reshape(-1)
        right = np.asarray(state["ruleset"].rules)[:, 0, 1:3]  # AgentHoldRule(right -> goal)
        td = policy(td)
        action = td.get("action")
        action = (action.argmax(-1) if action.shape[-1] > 1 else action.squeeze(-1)).cpu().numpy()
        q = q_pick_up(seen.pop() if seen else None)
        trial[attempt < last] += 1  # the attempt count starts again: a new trial
        last[:] = attempt
        for i in range(n):
            r, c = pos[i] + MOVES[int(direction[i])]
            front = tuple(int(x) for x in grid[i, r, c])
            records.append((i, int(trial[i]), int(attempt[i]), front, int(action[i]),
                            front == tuple(int(x) for x in right[i]), int(pocket[i, 0]) != 0, float(q[i])))
        return td

    try:
        with torch.no_grad():
            env.rollout(steps, act, break_when_any_done=False)
    finally:
        if hook is not None:
            hook.remove()
    return [r for r in records if r[1] < trial[r[0]]]  # the last trial of each slot may be cut short


def main(argv=None):
    own, passed = split_argv(argv)
    ap = attempts_parser(__doc__, "11_xland_minigrid", eval_envs=64, trials_per_env=8)
    ap.add_argument("--seed", type=int, default=0, help="seeds the eval envs and the actions")
    ap.add_argument("--same_layout", action="store_true",
                    help="the run is benchmarks/xland_same_layout.py's: replay it on the same trials")
    args = ap.parse_args(own)
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    example = load_example("11_xland_minigrid")
    if args.same_layout:
        from xland_same_layout import make_envs

        example.main = functools.partial(example.main, make_envs=make_envs)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, policy = trained_policy(example, args, passed, tmp)
        try:
            if trainer.eval_env.base_env.fenv.ruleset_benchmark not in ("local-hidden-rule", "local-one-pick"):
                raise SystemExit("xland_attempts.py reads the hidden-rule rulesets; the run's flags after `--` must "
                                 "include its --benchmark (local-hidden-rule, the default, or local-one-pick)")
            if not trainer.loss.q_per_action or trainer.loss.two_hot:
                raise SystemExit("xland_attempts.py reads per-action scalar critics (--agent_type agent, the "
                                 "example's default)")
            torch.manual_seed(args.seed)
            trainer.eval_env.set_seed(args.seed)
            mode = ExplorationType.DETERMINISTIC if args.greedy else ExplorationType.RANDOM
            with set_exploration_type(mode):
                records = rollout(trainer.eval_env, policy, args.trials_per_env * (trainer.cfg.max_seq_len + 1),
                                  trainer.loss)
            picks = first_picks(records)
            print(json.dumps({"run": args.run, "ckpt": args.ckpt, "greedy": args.greedy,
                              "same_layout": args.same_layout,
                              **choice_report(picks, trainer.eval_env.base_env.fenv.k_episodes),
                              "q_pick_up": pick_up_values(records, picks)}), flush=True)
        finally:
            trainer.close()


if __name__ == "__main__":
    main()
