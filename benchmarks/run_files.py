"""What the benchmarks read from the repository's examples and from a finished run: an example loaded as a module
(its `main`, its `defaults`) and the trainer it builds, a run's `metrics.csv` as rows and (updates, value) columns, and a command line split
at `--` into the script's own flags and those it passes on to every run."""
from __future__ import annotations

import csv
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split_argv(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(the script's own flags, the flags after `--`) of `argv` (default: the process's command line)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def load_example(name: str):
    """`examples/<name>.py` as a module (e.g. "03_popgym")."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_trainer(example, argv: list[str], train: bool):
    """The `AMAGOTrainer` that `example.main(argv)` builds, trained (no final eval) when `train`, not run
    otherwise; the example's `run` (resume, train, final eval, close) is replaced for the call."""
    import sys

    sys.path.insert(0, ROOT)
    from torchrl_amago.trainers import AMAGOTrainer

    held = {}

    def run(self, *args, **kwargs):
        held["trainer"] = self
        if train:
            self.train()
        return {}

    original, AMAGOTrainer.run = AMAGOTrainer.run, run
    try:
        example.main(argv)
    finally:
        AMAGOTrainer.run = original
    return held["trainer"]


def attempts_parser(doc: str, example: str, eval_envs: int, trials_per_env: int):
    """The flags of a script that replays a finished run of `examples/<example>.py` attempt by attempt."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help=f"a run folder of examples/{example}.py")
    ap.add_argument("--ckpt", default="latest", choices=("latest", "best"))
    ap.add_argument("--greedy", action="store_true", help="act greedily (default: sample, as the example's eval)")
    ap.add_argument("--eval_envs", type=int, default=eval_envs, help="eval envs stepped together")
    ap.add_argument("--trials_per_env", type=int, default=trials_per_env,
                    help="rollout length: this many of the longest possible trials per env")
    return ap


def trained_policy(example, args, passed: list[str], buffer_dir: str):
    """(trainer, policy): the trainer `example.main` builds from `passed` (no run; its files in `buffer_dir`, eval
    envs `args.eval_envs`), with the weights of `args.run`'s `ckpts/<args.ckpt>.pt` (read without unpickling), and an
    eval-mode copy of its policy that acts as the exploration type in force says."""
    from torchrl_amago.trainers.run.checkpoint import load_checkpoint, load_module_state

    path = os.path.join(args.run, "ckpts", f"{args.ckpt}.pt")
    trainer = example_trainer(example, ["--buffer_dir", buffer_dir, "--run_name", "probe", "--no-progress_bar",
                                        "--eval_envs", str(args.eval_envs), *passed], train=False)
    load_module_state(trainer.loss, load_checkpoint(path)["loss"], "model", path)
    policy = trainer.policy.fresh_copy().eval()
    policy.deterministic = None
    return trainer, policy


def read_metrics(path: str) -> list[dict]:
    """A run's `logs/metrics.csv`, one dict per record (a key a record did not log holds "")."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(grad_steps, value) for the records that logged `key`."""
    return [(float(r["grad_steps"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]


def final_eval(rows: list[dict], metric: str) -> dict:
    """The trainer's final eval of `metric` ("return", "success"): the record without an epoch (a run stopped before
    it: the last periodic eval). With `--final_eval best` it ran the best periodic eval's weights (logged as
    `eval_best/<metric>`): `final_weights` "best"; with `--final_eval both` `final` is the last weights' and
    `final_best` the best weights'."""
    evals = column(rows, f"eval/{metric}")
    last = column([r for r in rows if r.get("epoch") in (None, "")], f"eval/{metric}")
    of_best = column(rows, f"eval_best/{metric}")
    out = {"final": (last or of_best or evals)[-1][1] if evals or of_best else None,
           "final_weights": "best" if of_best and not last else "last"}
    if of_best and last:
        out["final_best"] = of_best[-1][1]
    return out
