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
alone, and `same` against `no_memory` what the memory is worth.

    python benchmarks/babyai_attempts.py --run runs/cap48_s0 -- --tasks BabyAI-OneRoomS12-v0 --attempt_steps 48
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

CONDITIONS = ("same", "new_layout", "no_memory")


def rollout(env, policy, steps: int, condition: str, generator: torch.Generator):
    """`env.rollout(steps)` of a `make_amago_env(MultitaskMetaBabyAI(...))` under one of `CONDITIONS` (module
    docstring): `new_layout` draws each later attempt's layout seed from the env's `seed_range`; `no_memory` shows the
    policy `is_init` at a later attempt's first step (the recorded data keeps the env's own `is_init`)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    base = env.base_env
    start, n = base._start_attempt, env.batch_size[0]
    later = torch.zeros(n, dtype=torch.bool)  # a later attempt started at the last env step

    def start_attempt(i: int) -> None:
        if base._count[i] > 0:
            later[i] = True
            if condition == "new_layout":
                lo, hi = base.seed_range
                base.layout_seed[i] = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        start(i)

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
    try:
        with torch.no_grad():
            return env.rollout(steps, act, break_when_any_done=False)
    finally:
        del base._start_attempt


def main(argv=None):
    own, passed = split_argv(argv)
    ap = attempts_parser(__doc__, "10_babyai", eval_envs=64, trials_per_env=6)
    ap.add_argument("--seed", type=int, default=0, help="seeds the eval envs, the actions and the fresh layouts")
    args = ap.parse_args(own)
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_amago.trainers.metrics import adaptation_report

    with tempfile.TemporaryDirectory() as tmp:
        trainer, policy = trained_policy(load_example("10_babyai"), args, passed, tmp)
        try:
            steps = args.trials_per_env * (trainer.cfg.max_seq_len + 1)  # rollout steps: this many longest trials
            for condition in CONDITIONS:
                torch.manual_seed(args.seed)
                trainer.eval_env.set_seed(args.seed)
                mode = ExplorationType.DETERMINISTIC if args.greedy else ExplorationType.RANDOM
                with set_exploration_type(mode):
                    data = rollout(trainer.eval_env, policy, steps, condition, torch.Generator().manual_seed(args.seed))
                report = {k.split("/", 1)[1]: round(v, 4) for k, v in adaptation_report(data).items()}
                print(json.dumps({"run": args.run, "ckpt": args.ckpt, "greedy": args.greedy, "condition": condition,
                                  **report}), flush=True)
        finally:
            trainer.close()


if __name__ == "__main__":
    main()
