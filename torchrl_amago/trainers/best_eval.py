"""The best periodic evaluation of a run and the weights it evaluated: ``<run>/ckpts/best.pt`` (``--keep_best``).

A policy can lose late in a run what it learned earlier (docs/api/objectives.md, "A policy that swings late in the
run"). At every periodic eval the trainer compares the eval's score with the best so far: ``eval/success`` when it
has a success threshold (T-Maze, dark key-to-door, MazeRunner), else ``eval/return``. When the eval is as good or
better (a tie goes to the later eval, which trained longer), the weights it evaluated are written to ``best.pt``:
the loss's whole state (encoders, heads, target copies, PopArt, input statistics; checked finite first), the eval's
counters and score and the config, by the same atomic write as ``latest.pt``, without optimizer or replay. The score and counters of the
best eval also go into every ``latest.pt`` (key ``best_eval``), so a resumed run goes on comparing against them; a
run branched with ``--branch_from`` starts its own record.

``--final_eval best`` loads ``best.pt`` before the final evaluation (the summary then reports the weights a user
keeps), ``--final_eval both`` evaluates the last weights and then the best ones (a paired comparison in one run);
:meth:`AMAGOTrainer.load_best` loads them from Python, and :func:`load_best_state` reads the file for
any module with the loss's keys.
"""
from __future__ import annotations

import math
import os

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_module_state, save_checkpoint

BEST_EVAL = "best_eval"  # the record's key in latest.pt and best.pt
BEST_REQUIRED = ("format", "loss", "config", BEST_EVAL)
FINAL_EVALS = {"last": ("last",), "best": ("best",), "both": ("last", "best")}  # --final_eval: the weights, in order


class BestEval:
    """The best score of `metric` over a run's periodic evals, with the counters of the eval that scored it."""

    def __init__(self, metric: str):
        self.metric = metric
        self.value = -math.inf
        self.counters: dict[str, int] | None = None  # epoch, env_steps, grad_steps of the best eval

    def improved_by(self, eval_result: dict) -> bool:
        """Whether `eval_result` (an `evaluate()` dict) scores at least the best so far (NaN / missing: no)."""
        value = eval_result.get(self.metric)
        return value is not None and math.isfinite(value) and value >= self.value

    def record(self, eval_result: dict, counters: dict[str, int]) -> None:
        self.value = float(eval_result[self.metric])
        self.counters = dict(counters)

    def state(self) -> dict:
        return {"metric": self.metric, "value": self.value, "counters": self.counters}

    def load_state(self, state: dict | None) -> None:
        """Restore :meth:`state` (from a checkpoint); one of another metric (or none: an older checkpoint, a
        branched run) leaves the record empty."""
        if state and state.get("metric") == self.metric and state.get("counters"):
            self.value, self.counters = float(state["value"]), dict(state["counters"])
        else:
            self.value, self.counters = -math.inf, None

    def summary(self) -> dict:
        """The summary line's entries: ``best_eval_success`` (or ``best_eval_return``) and where it was scored."""
        if self.counters is None:
            return {}
        return {f"best_{self.metric.replace('/', '_')}": self.value, "best_grad_steps": self.counters["grad_steps"],
                "best_env_steps": self.counters["env_steps"]}


def save_best(path: str, module: torch.nn.Module, best: BestEval, config: dict) -> None:
    """Write `module`'s state with the record of `best` to `path` (atomic, as every checkpoint)."""
    save_checkpoint(path, {"loss": module.state_dict(), "config": config, BEST_EVAL: best.state()})


def load_best_state(path: str, module: torch.nn.Module) -> dict:
    """Load the weights of a ``best.pt`` into `module` (the run's loss, or a module with its keys); returns the
    file's record (``metric``, ``value``, ``counters``). Raises CheckpointError naming the file when it is missing,
    unsafe, or does not fit `module`."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist: it is written at the first periodic eval of a run with "
                              f"--keep_best (the default) and --eval_interval > 0")
    ckpt = load_checkpoint(path, required=BEST_REQUIRED)
    load_module_state(module, ckpt["loss"], "model", path)
    return ckpt[BEST_EVAL]


__all__ = ["BEST_EVAL", "BestEval", "FINAL_EVALS", "load_best_state", "save_best"]
