"""The best periodic eval's weights (``ckpts/best.pt``, :func:`keep_if_best`) and the final evals."""
from __future__ import annotations

import math
import os

import torch

from .checkpoint import BEST_EVAL, CheckpointError, load_checkpoint, load_module_state, save_checkpoint
from .guards import check_finite_state

BEST_REQUIRED = ("format", "loss", "config", BEST_EVAL)
FINAL_EVALS = {"last": ("last",), "best": ("best",), "both": ("last", "best")}  # --final_eval: weights, in order


class BestEval:
    """The best score of `metric` over a run's periodic evals, with the counters of the eval that scored it."""

    def __init__(self, metric: str):
        self.metric = metric
        self.value = -math.inf
        self.counters: dict[str, int] | None = None  # epoch, env_steps, grad_steps of the best eval

    def improved_by(self, eval_result: dict) -> bool:
        """Whether `eval_result` scores at least the best so far (NaN / missing: no)."""
        value = eval_result.get(self.metric)
        return value is not None and math.isfinite(value) and value >= self.value

    def record(self, eval_result: dict, counters: dict[str, int]) -> None:
        self.value = float(eval_result[self.metric])
        self.counters = dict(counters)

    def state(self) -> dict:
        return {"metric": self.metric, "value": self.value, "counters": self.counters}

    def load_state(self, state: dict | None) -> None:
        """Restore :meth:`state`; one of another metric, or None, leaves the record empty."""
        if state and state.get("metric") == self.metric and state.get("counters"):
            self.value, self.counters = float(state["value"]), dict(state["counters"])
        else:
            self.value, self.counters = -math.inf, None

    def summary(self) -> dict:
        """The summary line's ``best_eval_success`` (or ``_return``) and where it was scored."""
        if self.counters is None:
            return {}
        return {f"best_{self.metric.replace('/', '_')}": self.value, "best_grad_steps": self.counters["grad_steps"],
                "best_env_steps": self.counters["env_steps"]}


def load_best_state(path: str, module: torch.nn.Module, identity: dict | None = None) -> dict:
    """Load a ``best.pt``'s checked weights into `module`; returns its record (metric, value, counters)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist: it is written at the first periodic eval of a run with "
                              f"--eval_interval > 0")
    ckpt = load_checkpoint(path, required=BEST_REQUIRED)
    run = ckpt.get("run")
    if identity is not None and isinstance(run, dict) and run.get("run_id") != identity["run_id"]:
        raise CheckpointError(f"{path} belongs to run {run.get('run_id')!r}, this run is {identity['run_id']!r}: it "
                              f"comes from another run; refused")
    load_module_state(module, ckpt["loss"], "model", path)
    return ckpt[BEST_EVAL]


def keep_if_best(trainer, evaluated: dict) -> None:
    """``post_eval`` hook: an eval scoring at least the best so far writes its (finite) weights to ckpts/best.pt."""
    if not trainer.best_eval.improved_by(evaluated):
        return
    path = trainer.checkpoints.path("best")
    check_finite_state(trainer.loss.state_dict(), f"checkpoint {path}")
    trainer.best_eval.record(evaluated, {"epoch": trainer.epoch, "env_steps": trainer.env_steps,
                                         "grad_steps": trainer.grad_steps})
    save_checkpoint(path, {"loss": trainer.loss.state_dict(), "config": trainer.cfg.to_dict(),
                           BEST_EVAL: trainer.best_eval.state(), "run": trainer.run_folder.entry()})


def final_evals(trainer, timesteps: int | None = None) -> dict[str, dict]:
    """The final evals of ``--final_eval`` (the best weights' as ``eval_best/*``); ``{"last" / "best": metrics}``."""
    finals = {}
    for weights in FINAL_EVALS[trainer.cfg.final_eval]:
        if weights == "best" and trainer.dist.is_main:
            trainer.load_best()
        res = finals[weights] = trainer.evaluate(timesteps)
        if res:
            trainer.logger.log(res if weights == "last" else
                               {k.replace("eval/", "eval_best/", 1): v for k, v in res.items()}, trainer.env_steps,
                               trainer.grad_steps)
    return finals


def final_summary(trainer, finals: dict[str, dict]) -> dict:
    """The summary line: counters, wall time, the first final eval's metrics and the best eval."""
    res = finals[FINAL_EVALS[trainer.cfg.final_eval][0]]
    summary = {"env_steps": trainer.env_steps, "grad_steps": trainer.grad_steps,
               "wall_s": round(trainer.logger.wall_time(), 1), "eval_return": res.get("eval/return", math.nan)}
    if "eval/success" in res:
        summary["eval_success"] = res["eval/success"]
    summary.update({k.replace("eval/", "eval_"): v for k, v in res.items() if "/episode_" in k or "/adaptation_" in k})
    if trainer.cfg.final_eval == "both":
        summary.update({f"eval_best_{k[len('eval/'):]}": v for k, v in finals["best"].items()
                        if k in ("eval/return", "eval/success")})
    summary["final_eval_weights"] = trainer.cfg.final_eval
    summary.update(trainer.best_eval.summary())
    return summary
