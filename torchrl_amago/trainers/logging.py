"""Run logging: TorchRL's loggers, one wide `metrics.csv`, curves, the progress bar, the JSON line."""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import time
import warnings
from typing import Mapping

import torch

from .._optional import require
from ..data.replay_persist import write_durably, write_error
from .config import LOGGERS
from .metrics import adaptation_report, finished_trial_returns, per_task_return_metrics, return_metrics


def _scalar(v) -> float | None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        v = v.item()
    return float(v) if isinstance(v, (int, float)) else None  # bools too


def torchrl_logger(kind: str, log_dir: str, run_name: str):
    """TorchRL's `kind` logger (`torchrl.record.loggers.get_logger`): csv and tensorboard write `log_dir/<run_name>`,
    wandb `log_dir/wandb`, its project from `$WANDB_PROJECT` (offline with `WANDB_MODE=offline`)."""
    if kind not in LOGGERS:
        raise ValueError(f"--logger {kind!r} is not one of {list(LOGGERS)}")
    if kind != "csv":  # tensorboard and wandb: packages of their own
        require(kind, kind, f"--logger {kind}")
    from torchrl.record.loggers import get_logger

    return get_logger(kind, log_dir, run_name)


class RunLogger:
    """Logs scalar records to `log_dir/metrics.csv` (kept on `resume`) and, with `logger` (csv, tensorboard or
    wandb), to TorchRL's logger of that kind (:func:`torchrl_logger`); draws curves."""

    def __init__(self, log_dir: str, run_name: str, config: Mapping | None = None, logger: str | None = None,
                 resume: bool = False):
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir, self.kind = log_dir, logger
        self.loggers = [torchrl_logger(logger, log_dir, run_name)] if logger else []
        self.hparams = {k: str(v) for k, v in dict(config).items()} if config else None  # with the 1st row
        self.csv_path = os.path.join(log_dir, "metrics.csv")
        self._rewrite = self.cut_row = False  # a last row was cut short: rewrite before the next row
        self._fields: list[str] = []
        self.records: list[dict] = self._read() if resume and os.path.exists(self.csv_path) else []
        self.t0 = time.time()
        self.wall_offset = self.records[-1].get("wall_s", 0.0) if self.records else 0.0

    def _read(self) -> list[dict]:
        """The rows of an existing metrics.csv (one row per epoch, in order). A last row
        without its newline is kept when it holds every field (else it was cut short and is dropped); a row
        repeated exactly is dropped with a warning; both are rewritten before the next row."""
        try:
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                text = f.read()
            lines = text.splitlines(True)
            reader = csv.DictReader(lines)
            self._fields = list(reader.fieldnames or [])
            if text and not text.endswith("\n"):
                self._rewrite = True  # with the newline, or without the row
                last = next(csv.reader(lines[-1:])) if len(lines) > 1 else []
                if len(last) != len(self._fields) or any(v == "" for v in last[-1:]):
                    self.cut_row, reader = True, csv.DictReader(lines[:-1])
            rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in reader]
        except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"{self.csv_path} is not a metrics CSV written by this logger ({type(e).__name__}: "
                             f"{e}); move it away to resume the run") from e
        return self._one_row_per_epoch(rows)

    def _one_row_per_epoch(self, rows: list[dict]) -> list[dict]:
        """``rows`` without exact repeats (warned); rows of one epoch that differ, or out of order, are refused."""
        kept, last = [], None
        for row in rows:
            if "epoch" not in row:  # a final eval's row
                kept.append(row)
                continue
            if last is not None and row["epoch"] <= last["epoch"]:
                if row == last:
                    warnings.warn(f"{self.csv_path}: the row of epoch {row['epoch']:g} appears twice; the repeat is "
                                  f"dropped", stacklevel=4)
                    self._rewrite = True
                    continue
                raise ValueError(f"{self.csv_path}: the row of epoch {row['epoch']:g} comes after the row of epoch "
                                 f"{last['epoch']:g} (epochs must increase, one row each); move the file away or "
                                 f"remove the extra rows to resume the run")
            kept.append(row)
            last = row
        return kept

    def drop_records_after(self, epoch: int) -> int:
        """Forget rows of epochs >= ``epoch`` (logged after the checkpoint being resumed) and the final evals of
        earlier ends of the run (rows without an epoch: a resumed run ends with its own); returns how many."""
        keep = [r for r in self.records if r.get("epoch", math.inf) < epoch]
        dropped = len(self.records) - len(keep)
        if dropped or self._rewrite:
            self.records = keep
            self._write_all()
            self.wall_offset = self.records[-1].get("wall_s", 0.0) if self.records else 0.0
        return dropped

    def _write_all(self) -> None:
        """Rewrite metrics.csv with every row, atomically and durably."""
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=self._fields)
        w.writeheader()
        w.writerows(self.records)
        write_durably(self.csv_path, lambda f: f.write(text.getvalue().encode()))
        self._rewrite = False

    def close(self) -> None:
        """Finish the wandb run or close TensorBoard's writer (its event files complete), if any; idempotent."""
        for lg in self.loggers:
            if self.kind == "wandb":
                lg.experiment.finish()
            elif self.kind == "tensorboard":
                lg.experiment.close()
        self.loggers = []

    def wall_time(self) -> float:
        return self.wall_offset + time.time() - self.t0

    def log(self, metrics: Mapping, env_steps: int, grad_steps: int) -> dict:
        rec = {"env_steps": float(env_steps), "grad_steps": float(grad_steps), "wall_s": round(self.wall_time(), 3)}
        rec.update({k: s for k, v in metrics.items() if (s := _scalar(v)) is not None})
        for lg in self.loggers:
            try:
                if self.hparams:
                    lg.log_hparams(self.hparams)
                for k, v in rec.items():
                    if k != "env_steps" and not math.isnan(v):
                        lg.log_scalar(k, v, step=int(env_steps))
            except OSError as e:  # a full disk: name the file
                where = e.filename or getattr(getattr(lg, "experiment", None), "log_dir", None) or self.log_dir
                raise write_error(where, e,
                                  "this epoch's metrics were not logged; the last checkpoint is kept") from e
        self.hparams = None
        self.records.append(rec)
        new_fields = [k for k in rec if k not in self._fields]
        if new_fields or self._rewrite:  # a widened header
            self._fields += new_fields
            self._write_all()
        else:
            self._append(rec)
        return rec

    def _append(self, rec: dict) -> None:
        """One row appended by one write, fsynced before the epoch's checkpoint; a failed write (a full disk) is
        undone and raises an OSError naming the file."""
        row = io.StringIO(newline="")
        csv.DictWriter(row, fieldnames=self._fields).writerow(rec)
        data = row.getvalue().encode()
        fd = os.open(self.csv_path, os.O_WRONLY | os.O_APPEND)
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise write_error(self.csv_path, e, "the row was not added; the file holds the rows before it") from e
        finally:
            os.close(fd)

    def plot_curve(self, key: str | list[str] = "eval/return", path: str | None = None) -> str | None:
        """`key` (or keys) against env steps and wall time, a PNG (default `learning_curve.png`); None if empty."""
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
        for i, (ax, label) in enumerate(zip(axes, ("env steps", "wall time (s)"))):
            for k, pts in series.items():
                if pts:
                    ax.plot([p[i] for p in pts], [p[2] for p in pts], marker="o", label=k)
            ax.set_xlabel(label)
            ax.set_ylabel(keys[0] if len(keys) == 1 else "eval")
            ax.grid(alpha=0.3)
        if len(keys) > 1:
            axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


class SilentLogger:
    """The logger of ranks > 0: keeps and writes nothing."""

    records = ()

    def __init__(self):
        self._t0 = time.time()

    def log(self, metrics, env_steps: int, grad_steps: int) -> dict:
        return {"env_steps": float(env_steps), "grad_steps": float(grad_steps), **dict(metrics)}

    def plot_curve(self, *args, **kwargs) -> None:
        pass

    close = plot_curve

    def drop_records_after(self, epoch: int) -> int:
        return 0

    def wall_time(self) -> float:
        return time.time() - self._t0


def run_logger(cfg, run_dir: str, is_main: bool, resume: bool):
    """The run's logger: a `RunLogger` in `<run>/logs` on rank 0, a `SilentLogger` on the other torchrun ranks."""
    if not is_main:
        return SilentLogger()
    return RunLogger(os.path.join(run_dir, "logs"), cfg.run_name, cfg.to_dict(), cfg.logger, resume=resume)


def add_scalars(sums: dict[str, float], out) -> None:
    """Add every one-element entry of `out` to `sums` (one transfer per accelerator)."""
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
    """`--progress_bar`: a tqdm bar over the run's epochs with the counters and the last eval (per attempt for a
    meta-RL run)."""

    def __init__(self, run_name: str, epoch: int, stop: int, shown: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=stop, initial=epoch, desc=run_name, unit="epoch", disable=not shown)
        self.close = self.bar.close
        self.last_eval: dict[str, str] = {}

    def update(self, record: dict, env_steps: int, grad_steps: int) -> None:
        """Count an epoch; show the counters and the last eval: its return (success), or its return per attempt."""
        self.bar.update(1)
        attempts = sorted((int(k.split("_")[1]), v) for k, v in record.items()
                          if k.startswith("eval/episode_") and k.endswith("_return"))
        if attempts:
            self.last_eval = {"eval": "/".join(f"{v:.2f}" for _, v in attempts)}
        elif "eval/return" in record:
            self.last_eval = {"eval": f"{record['eval/return']:.3g}"}
        if "eval/success" in record:
            self.last_eval["success"] = f"{record['eval/success']:.2f}"
        self.bar.set_postfix(env_steps=f"{env_steps:,}", grads=f"{grad_steps:,}", **self.last_eval)


def eval_record(rollout, seconds: float, env_name: str, task_names: list[str] | None,
                success_threshold: float | None) -> dict:
    """The `eval/*` record of an eval rollout `[N, T]`: returns, adaptation, success, env steps per second."""
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
