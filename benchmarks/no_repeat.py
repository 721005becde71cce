"""Probe: does the agent learn not to repeat itself, and how does that scale with the number of actions?

BattleshipEasy (64 cells) and ConcentrationEasy (52 cards) end below a random policy with the plain agent
(docs/results/popgym_campaign.md). Both punish repeating an action already taken in the episode. The builtin
`NoRepeat` env (`torchrl_amago.envs.NoRepeat`) keeps only that part: K actions, K steps, 1/K for each fresh action.
This trains it with `examples/03_popgym.py`'s defaults for K actions (the whole episode as context; below 32 actions
the conservative critic term, from 32 count heads, entropy bonus 0.1, greedy eval, a decaying learning rate) for
each K and seed, one run at a time, and prints one JSON line per run: the random policy's return, the lowest and
the last training return (mean over the epoch's episodes), the final eval return and the first update whose
training return passes the random policy's by `--margin` after the lowest one. The recorded probes with 8 and 16 actions
(docs/results/ablations/no_repeat.md) ran without the term (`--cql_coeff 0`).

    python benchmarks/no_repeat.py --num_actions 8 16 32 64 --seeds 0 1
    python benchmarks/no_repeat.py --num_actions 64 --seeds 0 -- --epochs 90   # flags after -- go to the trainer
    python benchmarks/no_repeat.py --num_actions 64 -- --no-count_heads --entropy_coeff 0 --sample_actions_eval \
        --cql_coeff 0 --lr_decay none   # the plain agent
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import ROOT, column, load_example, read_metrics, split_argv  # noqa: E402

sys.path.insert(0, ROOT)

from torchrl_amago.envs import NoRepeat, make_amago_env  # noqa: E402
from torchrl_amago.envs.builtin.no_repeat import random_return  # noqa: E402
from torchrl_amago.trainers import AMAGOTrainer, parse_config  # noqa: E402


def summarise(curve: list[tuple[int, float]], baseline: float, margin: float) -> dict:
    """The lowest and last training returns, and the first update after the lowest one that beats the baseline."""
    low_at = min(range(len(curve)), key=lambda i: curve[i][1])
    beats = [u for u, r in curve[low_at:] if r >= baseline + margin]
    return {"lowest_train_return": round(curve[low_at][1], 4), "lowest_at_update": curve[low_at][0],
            "last_train_return": round(curve[-1][1], 4), "first_update_above_random": beats[0] if beats else None}


def run(num_actions: int, seed: int, margin: float, trainer_argv: list[str], buffer_dir: str,
        curves_dir: str | None = None) -> dict:
    seq = num_actions + 1
    run_name = f"no_repeat{num_actions}_seed{seed}"
    argv = ["--seed", str(seed), "--buffer_dir", buffer_dir, "--run_name", run_name, "--no-progress_bar",
            *trainer_argv]
    cfg, args = parse_config(__doc__, argv=argv, defaults=(ex := load_example("03_popgym")).defaults(
        run_name, ex.game_settings(seq, num_actions)))

    def make_env(n):
        return make_amago_env(NoRepeat(n, num_actions=num_actions))

    trainer = AMAGOTrainer(cfg, make_env, make_env, env_name=f"NoRepeat{num_actions}")
    summary = trainer.run(final_eval_timesteps=4 * num_actions)
    metrics = os.path.join(buffer_dir, run_name, "logs", "metrics.csv")
    curve = [(int(u), r) for u, r in column(read_metrics(metrics), "train/return")]
    if curves_dir:
        os.makedirs(curves_dir, exist_ok=True)
        shutil.copyfile(metrics, os.path.join(curves_dir, f"{run_name}.csv"))
    baseline = random_return(num_actions)
    return {"num_actions": num_actions, "seed": seed, "random_return": round(baseline, 4),
            "final_eval_return": round(summary["eval_return"], 4), "updates": summary["grad_steps"],
            **summarise(curve, baseline, margin), "trainer_argv": trainer_argv}


def main(argv=None) -> int:
    own, trainer_argv = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num_actions", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--margin", type=float, default=0.05, help="above the random return by this much")
    ap.add_argument("--curves", default=None, help="copy each run's metrics.csv here as no_repeat<K>_seed<s>.csv")
    args = ap.parse_args(own)
    for k in args.num_actions:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                print(json.dumps(run(k, seed, args.margin, trainer_argv, tmp, args.curves)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
