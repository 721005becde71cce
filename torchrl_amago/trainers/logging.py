"""Run logging: TorchRL's loggers (CSV, wandb on request), one wide `metrics.csv` (one row per record, each with
`env_steps`, `grad_steps` and `wall_s`), the learning-curve PNG, the progress bar and the examples' JSON line."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from typing import Mapping

import torch

from .._optional import require
from .metrics import adaptation_report, finished_trial_returns, per_task_return_metrics, return_metrics


def _scalar(v) -> float | None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        v = v.item()
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


class RunLogger:
    """Logs scalar records to TorchRL loggers and `metrics.csv`; draws `learning_curve.png` at the end."""

    def __init__(self, log_dir: str, run_name: str, config: Mapping | None = None, use_wandb: bool = False,
                 wandb_project: str = "torchrl_amago", resume: bool = False):
        from torchrl.record import CSVLogger

        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.loggers = [CSVLogger(run_name, log_dir=log_dir)]
        if use_wandb:
            require("wandb", "wandb", "--wandb_project")
            from torchrl.record import WandbLogger

            offline = os.environ.get("WANDB_MODE", "") == "offline"
            self.wandb = WandbLogger(exp_name=run_name, project=wandb_project, save_dir=log_dir, offline=offline)
            self.loggers.append(self.wandb)
        else:
            self.wandb = None
        self.hparams = {k: str(v) for k, v in dict(config).items()} if config else None  # logged with the 1st row
        self.csv_path = os.path.join(log_dir, "metrics.csv")
        self.records: list[dict] = []
        self._rewrite = self.cut_row = False  # a last row was cut short: rewrite before the next row
        self._fields: list[str] = []
        if resume and os.path.exists(self.csv_path):
            self.records = self._read()
        self.t0 = time.time()
        self.wall_offset = self.records[-1].get("wall_s", 0.0) if self.records else 0.0

    def _read(self) -> list[dict]:
        """The rows of an existing metrics.csv; a last row cut short (a stop in the middle of writing it) is dropped
        and the file rewritten before the next row."""
        try:
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                text = f.read()
            if text and not text.endswith("\n"):
                text, self._rewrite = text[:text.rfind("\n") + 1], True
                self.cut_row = True
            reader = csv.DictReader(text.splitlines(True))
            rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in reader]
            self._fields = list(reader.fieldnames or [])
            return rows
        except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"{self.csv_path} is not a metrics CSV written by this logger ({type(e).__name__}: "
                             f"{e}); move it away to resume the run") from e

    def drop_records_after(self, epoch: int) -> int:
        """Forget rows of epochs >= ``epoch`` (logged after the checkpoint being resumed, e.g. by a run killed
        between logging and saving), so the resumed run does not log them twice. Returns the rows dropped."""
        keep = [r for r in self.records if r.get("epoch", -1.0) < epoch]
        dropped = len(self.records) - len(keep)
        if dropped or self._rewrite:
            self.records = keep
            self._write_all()
            self.wall_offset = self.records[-1].get("wall_s", 0.0) if self.records else 0.0
        return dropped

    def _write_all(self) -> None:
        """Rewrite metrics.csv with every row (a temporary file and a rename: the old file or the new one)."""
        tmp = self.csv_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields)
            w.writeheader()
            w.writerows(self.records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.csv_path)
        self._rewrite = False

    def close(self) -> None:
        """Finish the wandb run, if any (its offline files or upload are complete after this); CSVs need nothing."""
        if self.wandb is not None:
            self.wandb.experiment.finish()
            self.loggers.remove(self.wandb)
            self.wandb = None

    def wall_time(self) -> float:
        return self.wall_offset + time.time() - self.t0

    def log(self, metrics: Mapping, env_steps: int, grad_steps: int) -> dict:
        rec = {"env_steps": float(env_steps), "grad_steps": float(grad_steps), "wall_s": round(self.wall_time(), 3)}
        for k, v in metrics.items():
            s = _scalar(v)
            if s is not None:
                rec[k] = s
        for lg in self.loggers:
            if self.hparams:
                lg.log_hparams(self.hparams)
            for k, v in rec.items():
                if k != "env_steps" and not math.isnan(v):
                    lg.log_scalar(k, v, step=int(env_steps))
        self.hparams = None
        self.records.append(rec)
        new_fields = [k for k in rec if k not in self._fields]
        if new_fields or self._rewrite:  # a widened header
            self._fields += new_fields
            self._write_all()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writerow(rec)
                f.flush()
                os.fsync(f.fileno())  # durable before the epoch's checkpoint, which resume checks it against
        return rec

    def plot_curve(self, key: str | list[str] = "eval/return", path: str | None = None) -> str | None:
        """`key` (or one line per key of a list) against env steps and wall time, a PNG next to the CSV (default
        `learning_curve.png`); None if nothing to plot."""
        keys = [key] if isinstance(key, str) else list(key)
        series = {k: [(r["env_steps"], r["wall_s"], r[k]) for r in self.records if k in r and not math.isnan(r[k])]
                  for k in keys}
        if not any(series.values()):
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = path or os.path.join(self.log_dir, "learning_curve.png")
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for k, pts in series.items():
            if pts:
                steps, wall, val = zip(*pts)
                axes[0].plot(steps, val, marker="o", label=k)
                axes[1].plot(wall, val, marker="o", label=k)
        axes[0].set_xlabel("env steps")
        axes[1].set_xlabel("wall time (s)")
        for ax in axes:
            ax.set_ylabel(keys[0] if len(keys) == 1 else "eval")
            ax.grid(alpha=0.3)
        if len(keys) > 1:
            axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


class SilentLogger:
    """The logger of ranks > 0: keeps nothing, writes nothing (rank 0's RunLogger records the run)."""

    def __init__(self):
        self._t0 = time.time()

    def log(self, metrics, env_steps: int, grad_steps: int) -> dict:
        return {"env_steps": float(env_steps), "grad_steps": float(grad_steps), **dict(metrics)}

    def plot_curve(self, *args, **kwargs) -> None:
        return None

    def close(self) -> None:
        return None

    def drop_records_after(self, epoch: int) -> int:
        return 0  # it keeps no rows

    def wall_time(self) -> float:
        return time.time() - self._t0


def run_logger(cfg, run_dir: str, is_main: bool, resume: bool):
    """The run's logger: a `RunLogger` in `<run>/logs` on rank 0, a `SilentLogger` on the other torchrun ranks."""
    if not is_main:
        return SilentLogger()
    return RunLogger(os.path.join(run_dir, "logs"), cfg.run_name, cfg.to_dict(), cfg.wandb_project is not None,
                     cfg.wandb_project, resume=resume)


def add_scalars(sums: dict[str, float], out) -> None:
    """Add every one-element entry of `out` (an update's outputs) to `sums`; the entries on an accelerator are read in
    one transfer per device (one sync per update instead of one per key)."""
    on_device: dict[torch.device, list] = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            if v.device.type == "cpu":
                sums[k] = sums.get(k, 0.0) + float(v)
            else:
                on_device.setdefault(v.device, []).append((k, v))
    for items in on_device.values():
        values = torch.stack([v.detach().reshape(()).double() for _, v in items]).tolist()
        for (k, _), x in zip(items, values):
            sums[k] = sums.get(k, 0.0) + x


class ProgressBar:
    """`--progress_bar`: a tqdm bar over the run's epochs with the counters and the last returns (`shown=False`:
    nothing)."""

    def __init__(self, run_name: str, epoch: int, stop: int, shown: bool = True):
        self.bar = None
        if shown:
            from tqdm import tqdm

            self.bar = tqdm(total=stop, initial=epoch, desc=run_name, unit="epoch")

    def update(self, record: dict, env_steps: int, grad_steps: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            last = {k.split("/")[-1]: round(v, 3) for k, v in record.items() if k in ("eval/return", "train/return")}
            self.bar.set_postfix(env_steps=env_steps, grads=grad_steps, **last)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def eval_record(rollout, seconds: float, env_name: str, task_names: list[str] | None,
                success_threshold: float | None) -> dict:
    """The `eval/*` record of an eval rollout `[N, T]`: returns of finished trials (also `eval/return/<env_name>`
    and per task name), the adaptation report of meta-RL trials (per attempt, and the gain from the first to the last;
    `metrics.adaptation_report`), `eval/success` (returns >= `success_threshold`) and the env steps per s."""
    returns, _ = finished_trial_returns(rollout)
    res = return_metrics(returns, "eval", None)
    res.update(return_metrics(returns, "eval", env_name))
    if task_names:
        res.update(per_task_return_metrics(rollout, returns, "eval", task_names))
    res.update(adaptation_report(rollout, "eval"))
    if success_threshold is not None:
        res["eval/success"] = sum(r >= success_threshold for r in returns) / len(returns) if returns else math.nan
    res["eval/env_steps_per_s"] = rollout.numel() / max(seconds, 1e-9)
    return res


def print_summary(example: str, summary: dict) -> None:
    """The one JSON line every example ends with."""
    print(json.dumps({"example": example, **summary}), flush=True)
