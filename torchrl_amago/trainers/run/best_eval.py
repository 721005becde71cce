"""The best periodic eval's weights (``ckpts/best.pt``, :meth:`BestEval.keep`) and the run's summary line."""
from __future__ import annotations

import math

from .checkpoint import BEST_EVAL, save_checkpoint
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

    def keep(self, eval_result: dict, counters: dict, loss_state: dict, config: dict, run: dict, path: str) -> None:
        """Record `eval_result` as the best and write its (finite) weights to `path` (``ckpts/best.pt``)."""
        check_finite_state(loss_state, f"checkpoint {path}")
        self.record(eval_result, {k: counters[k] for k in ("epoch", "env_steps", "grad_steps")})
        save_checkpoint(path, {"loss": loss_state, "config": config, BEST_EVAL: self.state(), "run": run})

    def summary(self) -> dict:
        """The summary line's ``best_eval_success`` (or ``_return``) and where it was scored."""
        if self.counters is None:
            return {}
        return {f"best_{self.metric.replace('/', '_')}": self.value, "best_grad_steps": self.counters["grad_steps"],
                "best_env_steps": self.counters["env_steps"]}


def run_summary(counters: dict, result: dict, wall_s: float | None = None) -> dict:
    """A summary line: the counters, the wall time, and an eval's return, success and per-attempt numbers."""
    summary = {"env_steps": counters["env_steps"], "grad_steps": counters["grad_steps"]}
    if wall_s is not None:
        summary["wall_s"] = round(wall_s, 1)
    summary["eval_return"] = result.get("eval/return", math.nan)
    if "eval/success" in result:
        summary["eval_success"] = result["eval/success"]
    summary.update({k.replace("eval/", "eval_"): v for k, v in result.items()
                    if "/episode_" in k or "/adaptation_" in k})
    return summary


def final_summary(counters: dict, finals: dict[str, dict], final_eval: str, wall_s: float, best: "BestEval") -> dict:
    """The summary line of a run: :func:`run_summary` of the first final eval of ``--final_eval``, the best
    weights' return and success with ``both``, and the best periodic eval."""
    summary = run_summary(counters, finals[FINAL_EVALS[final_eval][0]], wall_s)
    if final_eval == "both":
        summary.update({f"eval_best_{k[len('eval/'):]}": v for k, v in finals["best"].items()
                        if k in ("eval/return", "eval/success")})
    summary["final_eval_weights"] = final_eval
    summary.update(best.summary())
    return summary
