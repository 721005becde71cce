"""Does a trained BabyAI agent use what attempt 1 showed? Its eval trials, the same trials with every later attempt
moved to a fresh unseen layout, and with the agent's memory emptied when a later attempt starts.

Loads the weights of a finished `examples/10_babyai.py` run (`--run DIR`, its `ckpts/<--ckpt>.pt`, read without
unpickling), acts in its eval envs and prints one JSON line per condition with the package's `adaptation_report`
(per-attempt return and success, the gain last - first with its 95 % interval):
- `same`: the example's trials (every attempt on one layout);
- `new_layout`: attempts after the first start on a fresh unseen layout, so what attempt 1 showed is of no use;
- `no_memory`: the same layout, but the policy's memory is emptied when a later attempt starts (positions go on).
Attempt 2 of `same` above attempt 2 of `new_layout` is what the agent draws from having seen this layout (a memory
that is used, not only kept); `no_memory`'s attempt 2 against attempt 1 is the cost of being later in the trial
alone, and `same` against `no_memory` what the memory is worth: each later condition's line has `same_minus_this_*`,
the last attempt's mean in `same` minus its own, with a 95 % interval. `--walks` (one-room levels) adds each
attempt's steps against the shortest walk of `benchmarks/babyai_bound.py`, where the target was in view at the start
and where not. `--picks` (pickup levels) adds how often an attempt picks up what the one before it on the same layout
picked, after a wrong pick (Bayes-optimal: never) and after a right one (always).

    python benchmarks/babyai_attempts.py --run runs/cap48_s0 -- --tasks BabyAI-OneRoomS12-v0 --attempt_steps 48
Flags after `--` go to the example and must build the same model as the run's.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from babyai_bound import PICKUP  # noqa: E402
from run_files import attempts_parser, load_example, split_argv, trained_policy  # noqa: E402

CONDITIONS = ("same", "new_layout", "no_memory")


def rollout(env, policy, steps: int, condition: str, generator: torch.Generator, walks: list | None = None,
            picks: list | None = None):
    """`env.rollout(steps)` of a `make_amago_env(MultitaskMetaBabyAI(...))` under one of `CONDITIONS` (module
    docstring): `new_layout` draws each later attempt's layout seed from the env's `seed_range`; `no_memory` shows the
    policy `is_init` at a later attempt's first step (the recorded data keeps the env's own `is_init`). A `walks` list
    receives ``(task, layout seed, attempt, steps, success)`` for every attempt that ends, a `picks` list
    ``(slot, layout seed, attempt, cell, success)`` with the cell of what the attempt's last action picked up (or
    None)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    base = env.base_env
    start, slot_step, n = base._start_attempt, base._slot_step, env.batch_size[0]
    later = torch.zeros(n, dtype=torch.bool)  # a later attempt started at the last env step
    taken = [0] * n  # steps of each slot's attempt so far

    def start_attempt(i: int) -> None:
        if base._count[i] > 0:
            later[i] = True
            if condition == "new_layout":
                lo, hi = base.seed_range
                base.layout_seed[i] = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        taken[i] = 0
        start(i)

    def counted_step(i: int, action):
        level = base._env(i).unwrapped
        picking = int(action) == PICKUP and hasattr(level, "front_pos") and level.carrying is None
        faced = tuple(int(v) for v in level.front_pos) if picking else None
        out = slot_step(i, action)  # (obs, reward, attempt over, success, ...)
        faced = faced if picking and level.carrying is not None else None  # what it picked up
        taken[i] += 1
        if out[2]:
            seed, k, success = int(base.layout_seed[i]), int(base._count[i]), bool(out[3])
            if walks is not None:
                walks.append((base.task_names[int(base.task_index[i])], seed, k, taken[i], success))
            if picks is not None:
                picks.append((i, seed, k, faced, success))
        return out

    def act(td):
        if condition == "no_memory" and later.any():
            shown = td.clone(False)
            shown.set("is_init", td.get("is_init") | later.view(n, 1).to(td.device))
            td.set("action", policy(shown).get("action"))
        else:
            td = policy(td)
        later.zero_()
        return td

    base._start_attempt = start_attempt
    if walks is not None or picks is not None:
        base._slot_step = counted_step
    try:
        with torch.no_grad():
            return env.rollout(steps, act, break_when_any_done=False)
    finally:
        del base._start_attempt
        vars(base).pop("_slot_step", None)


def same_minus_this(same: dict, this: dict) -> dict:
    """``same_minus_this_{return,success}`` (and ``_ci_low`` / ``_ci_high``): the mean return and success of the last
    attempt in `same`'s trials minus those in `this`'s (two conditions' `attempt_records`, the same attempts per trial),
    with a 95 % Welch interval (normal quantile: each condition has hundreds of trials)."""
    out = {}
    for name, table in (("return", "returns"), ("success", "success")):
        a, b = (r[table][:, -1] for r in (same, this))
        a, b = a[~torch.isnan(a)], b[~torch.isnan(b)]
        diff = float(a.mean() - b.mean())
        half = 1.96 * float((a.var() / a.numel() + b.var() / b.numel()).sqrt())
        key = f"same_minus_this_{name}"
        out.update({key: diff, key + "_ci_low": diff - half, key + "_ci_high": diff + half})
    return out


def walk_report(walks: list, layout_of) -> dict:
    """Per attempt ``episode_<k>`` (0-based), over its successful attempts in ``walks`` (`rollout`'s): mean `steps`,
    mean `shortest` (the informed walk of `benchmarks/babyai_bound.py`), the mean excess steps - shortest where the
    target was in view at the start (`excess_in_view`) and where it was not (`excess_out_of_view`), and that share
    (`out_of_view`). ``layout_of(task, seed)`` returns `babyai_bound.layout`'s tuple for that layout."""
    from babyai_bound import in_view, informed_actions

    rows = []
    for task, seed, k, steps, success in walks:
        if success:
            walkable, _, pose, target, pickup = layout_of(task, seed)
            rows.append((k, steps, len(informed_actions(walkable, pose, target, pickup)),
                         in_view(walkable.shape, pose, target)))
    out = {}
    for k in sorted({r[0] for r in rows}):
        steps, shortest, in_view = (np.array(c) for c in zip(*(r[1:] for r in rows if r[0] == k)))
        excess = steps - shortest
        out[f"episode_{k}"] = {key: round(float(v.mean()), 3) if v.size else float("nan") for key, v in (
            ("steps", steps), ("shortest", shortest), ("excess_in_view", excess[in_view]),
            ("excess_out_of_view", excess[~in_view]), ("out_of_view", ~in_view))}
        out[f"episode_{k}"]["attempts"] = len(steps)
    return out


def repeat_report(picks: list) -> dict:
    """From `rollout`'s ``picks``: over consecutive attempts of one trial (same slot and layout), the share whose later
    attempt ends picking up the cell the earlier one picked, after a wrong pick (`repeat_after_wrong`) and after a right
    one (`repeat_after_right`), with their counts."""
    last, after = {}, {False: [], True: []}
    for slot, seed, k, cell, success in picks:
        before = last.get(slot)
        if before is not None and before[0] == seed and before[1] == k - 1 and before[2] is not None:
            after[before[3]].append(cell == before[2])
        last[slot] = (seed, k, cell, success)
    out = {}
    for right, name in ((False, "wrong"), (True, "right")):
        out[f"repeat_after_{name}"] = round(float(np.mean(after[right])), 4) if after[right] else None
        out[f"attempts_after_{name}"] = len(after[right])
    return out


def minigrid_layouts():
    """``layout_of(task, seed)`` for `walk_report`: the real level's layout (needs minigrid)."""
    from babyai_bound import layout

    from torchrl_amago.envs.libs.babyai import make_minigrid_env

    envs = {}

    def layout_of(task: str, seed: int):
        if task not in envs:
            envs[task] = make_minigrid_env(task)
        envs[task].reset(seed=seed)
        return layout(envs[task].unwrapped)

    return layout_of


def main(argv=None):
    own, passed = split_argv(argv)
    ap = attempts_parser(__doc__, "10_babyai", eval_envs=64, trials_per_env=6)
    ap.add_argument("--seed", type=int, default=0, help="seeds the eval envs, the actions and the fresh layouts")
    ap.add_argument("--walks", action="store_true",
                    help="also report each attempt's steps against the shortest walk (one-room levels)")
    ap.add_argument("--picks", action="store_true",
                    help="also report how often an attempt picks up what the attempt before it picked (pickup levels)")
    args = ap.parse_args(own)
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_amago.trainers.metrics import adaptation_report, attempt_records

    layout_of = minigrid_layouts() if args.walks else None
    with tempfile.TemporaryDirectory() as tmp:
        trainer, policy = trained_policy(load_example("10_babyai"), args, passed, tmp)
        try:
            steps = args.trials_per_env * (trainer.cfg.max_seq_len + 1)  # rollout steps: this many longest trials
            records = {}
            for condition in CONDITIONS:
                torch.manual_seed(args.seed)
                trainer.eval_env.set_seed(args.seed)
                mode = ExplorationType.DETERMINISTIC if args.greedy else ExplorationType.RANDOM
                walks, picks = ([] if args.walks else None), ([] if args.picks else None)
                with set_exploration_type(mode):
                    data = rollout(trainer.eval_env, policy, steps, condition, torch.Generator().manual_seed(args.seed),
                                   walks, picks)
                records[condition] = attempt_records(data)
                report = adaptation_report(records[condition])
                if condition != "same":
                    report.update(same_minus_this(records["same"], records[condition]))
                report = {k.split("/")[-1]: round(v, 4) for k, v in report.items()}
                if args.walks:
                    report["walks"] = walk_report(walks, layout_of)
                if args.picks:
                    report["picks"] = repeat_report(picks)
                print(json.dumps({"run": args.run, "ckpt": args.ckpt, "greedy": args.greedy, "condition": condition,
                                  **report}), flush=True)
        finally:
            trainer.close()


if __name__ == "__main__":
    main()
