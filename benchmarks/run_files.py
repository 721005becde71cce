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
