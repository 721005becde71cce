"""What does the agent do with what an attempt revealed? Meta-Frozen-Lake, attempt by attempt, against what the trial
has shown.

The lake is deterministic (no slip, no hard mode), so after a successful attempt the same moves succeed again (a
Bayes-optimal agent succeeds with probability 1), and after falling into a hole it never steps on that cell again.
Loads the weights of a finished `examples/00_meta_frozen_lake.py` run (`--run DIR`, its `ckpts/<--ckpt>.pt`, read
without unpickling), acts in its eval envs and prints one JSON line:
- `success`: success rate per attempt;
- `after_success`: P(success at attempt k+1 | success at k): 1 for an agent that repeats what worked;
- `after_hole`: P(success at k+1 | fell into a hole at k) and `same_hole_again`: P(stepping on that hole at k+1);
- `known_hole_steps`: the fraction of attempts after the first that step on a hole found earlier in the trial.

    python benchmarks/lake_attempts.py --run runs/lake4_k3 --greedy -- --lake_size 4 --k_episodes 3
Flags after `--` go to the example and must build the same model as the run's.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import attempts_parser, load_example, split_argv, trained_policy  # noqa: E402


def record_trials(env, policy, steps: int) -> list[list[dict]]:
    """Step `env` (a `make_amago_env(MetaFrozenLake(...))`) for `steps` with `policy`; return every finished trial as
    its attempts, each ``{"success": bool, "hole": (x, y) or None, "cells": set of cells stepped on}``."""
    base = env.base_env
    if base.hard_mode or base.slip_chance > 0 or base.recover_mode:
        raise ValueError("lake_attempts: the lake must be deterministic (no --hard_mode, --slip_chance, --recover_mode)")
    open_trials: list[list[dict]] = [[] for _ in range(base.n)]
    current = [{"cells": set()} for _ in range(base.n)]
    done: list[list[dict]] = []
    advance = base._advance

    def tracked(action):
        before, k_before = base.pos.clone(), base.k.clone()
        move = base._moves[base.action_perm.gather(1, action.unsqueeze(-1)).squeeze(-1)]
        nxt = (before + move).clamp(0, base.size - 1)
        out = advance(action)
        for j in range(base.n):
            cell = tuple(nxt[j].tolist())
            current[j]["cells"].add(cell)
            if bool(base.ep_end[j]):
                fell = bool(base.holes[j, cell[0], cell[1]]) and not bool(base.ep_success[j])
                open_trials[j].append({"success": bool(base.ep_success[j]), "hole": cell if fell else None,
                                       "cells": current[j]["cells"]})
                current[j] = {"cells": set()}
                if int(k_before[j]) == base.k_episodes - 1:
                    done.append(open_trials[j])
                    open_trials[j] = []
        return out

    base._advance = tracked
    try:
        with torch.no_grad():
            env.rollout(steps, policy, break_when_any_done=False)
    finally:
        del base._advance
    return done


def summarize(trials: list[list[dict]]) -> dict:
    """The rates named in the module docstring, over complete trials."""
    if not trials:
        raise ValueError("lake_attempts: no trial finished; give it more steps (--trials_per_env)")
    k = len(trials[0])

    def rate(pairs):
        pairs = list(pairs)
        return round(sum(pairs) / len(pairs), 3) if pairs else None

    steps = [(t[i], t[i + 1]) for t in trials for i in range(k - 1)]
    return {
        "trials": len(trials),
        "success": [rate(t[i]["success"] for t in trials) for i in range(k)],
        "after_success": rate(b["success"] for a, b in steps if a["success"]),
        "after_hole": rate(b["success"] for a, b in steps if a["hole"]),
        "same_hole_again": rate(a["hole"] in b["cells"] for a, b in steps if a["hole"]),
        "known_hole_steps": rate(any(h in t[i]["cells"] for h in {a["hole"] for a in t[:i] if a["hole"]})
                                 for t in trials for i in range(1, k)),
    }


def main(argv=None):
    own, passed = split_argv(argv)
    args = attempts_parser(__doc__, "00_meta_frozen_lake", eval_envs=256, trials_per_env=4).parse_args(own)
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    with tempfile.TemporaryDirectory() as tmp:
        trainer, policy = trained_policy(load_example("00_meta_frozen_lake"), args, passed, tmp)
        base = trainer.eval_env.base_env
        steps = args.trials_per_env * base.max_episode_steps * base.k_episodes
        with set_exploration_type(ExplorationType.DETERMINISTIC if args.greedy else ExplorationType.RANDOM):
            trials = record_trials(trainer.eval_env, policy, steps)
        trainer.close()
    print(json.dumps({"run": args.run, "ckpt": args.ckpt, "greedy": args.greedy, **summarize(trials)}), flush=True)


if __name__ == "__main__":
    main()
