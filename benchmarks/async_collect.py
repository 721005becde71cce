"""Acting and learning at once: env steps/s and updates/s of the trainer with --collect sync vs async (vs Ray).

Settings: `examples/04_tmaze.py --horizon 50` with 8 envs (Transformer d_model 128, 2 layers, timestep encoder 128,
batch 24, windows of 51 steps, 51 env steps per env per epoch, 40 updates per epoch: 0.098 updates per env step
in every mode; async holds it with `--replay_ratio`). Each run trains `--warmup` epochs, then times `--epochs`
epochs: `env_steps_per_s` = env steps stored / wall time, `updates_per_s` = updates / wall time (both over the
same wall time, eval off). Modes alternate in rounds (sync, async, sync, ...), so a busy machine disturbs them
alike; one JSON line per mode gives the medians over rounds and the per-round values.

The sync line also gives, per timed epoch, the seconds spent acting (`acting_s`: collecting and storing the
epoch's steps) and learning (`learning_s`: the epoch's updates), the rest (`other_s`: logging, checkpoint) and
the ideal overlap bound `overlap_bound = (acting_s + learning_s) / max(acting_s, learning_s)`: the speedup a
mode that acts and learns at once could reach at most. Each other line gives its `speedup` over sync (the smaller
of the env-steps/s and updates/s ratios, paired round by round) and `fraction_of_bound` = speedup / that round's
bound, plus where its epoch went (`update_s`, `wait_s` for data, `push_s` for weight pushes, `store_s`). With K
collectors, `collectors_bound = (acting_s + learning_s) / max(acting_s / K, learning_s)` is the most they could
reach if acting split evenly over them (envs whose cost is per env: `--env_cost_per_env_ms`, `--env_wait_ms`), and
`fraction_of_collectors_bound` = speedup / it.

    python benchmarks/async_collect.py --quick       # 3 rounds of 4 timed epochs
    python benchmarks/async_collect.py --quick --env_cost_ms 20   # a costly env: 20 ms of CPU per batched step
    python benchmarks/async_collect.py --quick --modes sync async distributed   # + Ray workers on loopback
    python benchmarks/async_collect.py --quick --env_wait_ms 12.5 --num_collectors 4   # slow envs, 4 workers
    python benchmarks/async_collect.py --quick --env_cost_per_env_ms 10 --num_collectors 4   # 10 ms CPU per env step

Threads: `--num_threads` sets the learner's torch threads in every mode (default: torch's, every core); in async
the learner hands a core to its worker while the worker acts (torchrl_amago/trainers/scale/threads.py); collector workers
use 1 thread each. `load` records the 1-minute load average before and after each run (other jobs on the machine
distort every mode).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from functools import partial, wraps

from torchrl.envs import Transform, TransformedEnv

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.trainers import LONG_HORIZON_PRESET, AMAGOTrainer, TrainConfig

HORIZON = 50
MODES = ("sync", "async", "distributed")


class StepCost(Transform):
    """`ms` per batched env step, or per env step with `per_env` (the batch's envs in turn: a worker with n envs
    pays n x `ms` per batched step, so envs split over more workers step faster); `_pay(seconds)` spends it."""

    per_env = False

    def __init__(self, ms: float):
        super().__init__()
        self.ms = ms

    def seconds(self, next_tensordict) -> float:
        return self.ms / 1000 * (max(next_tensordict.numel(), 1) if self.per_env else 1)

    def _step(self, tensordict, next_tensordict):
        self._pay(self.seconds(next_tensordict))
        return next_tensordict


class CpuCostPerStep(StepCost):
    """Burns `ms` of CPU per batched env step (a stand-in for a simulator that costs more than T-Maze's ~0.05 ms)."""

    @staticmethod
    def _pay(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


class CpuCostPerEnvStep(CpuCostPerStep):
    """Burns `ms` of CPU per env step, the batch's envs in turn (a simulator whose cost grows with its envs): envs
    split over more workers on more cores step faster."""

    per_env = True


class WaitPerStep(StepCost):
    """Waits `ms` per env step, the batch's envs in turn, without using a core (envs stepped one after another
    whose latency, not their CPU, limits acting: a simulator on another machine or device, a robot, a game server).
    A worker with n envs waits n x `ms` per batched step, so envs split over more workers step faster."""

    per_env = True
    _pay = staticmethod(time.sleep)


def make_env(n: int, env_cost_ms: float = 0.0, env_wait_ms: float = 0.0, env_cost_per_env_ms: float = 0.0):
    env = make_amago_env(TMaze(n, corridor_length=HORIZON, passive=True, penalty=-1.0 / (HORIZON + 1)))
    if env_cost_ms > 0:
        env = TransformedEnv(env, CpuCostPerStep(env_cost_ms))
    if env_cost_per_env_ms > 0:
        env = TransformedEnv(env, CpuCostPerEnvStep(env_cost_per_env_ms))
    return env if env_wait_ms <= 0 else TransformedEnv(env, WaitPerStep(env_wait_ms))


def config(mode: str, root: str, num_collectors: int, epochs: int, num_threads: int | None) -> TrainConfig:
    trial = HORIZON + 1
    return TrainConfig(run_name=f"bench_{mode}", buffer_dir=root, collect=mode, num_collectors=num_collectors,
                       parallel_envs=8, timesteps_per_epoch=trial, grads_per_epoch=40, epochs=epochs,
                       max_seq_len=trial, memory_size=128, memory_layers=2, tstep_layers=2, tstep_hidden=128,
                       tstep_out=128, tstep_normalize_inputs=False, batch_size=24, eval_interval=0,
                       sample_actions_train=False, reward_multiplier=100.0, gamma=0.9999, lr_warmup_steps=100,
                       learning_rate=3e-4, ckpt_interval=0, progress_bar=False, dset_max_size=200_000,
                       num_threads=num_threads, **LONG_HORIZON_PRESET)


class Timers:
    """Seconds spent inside chosen methods of an object (wraps them on the instance)."""

    def __init__(self):
        self.s: dict[str, float] = defaultdict(float)

    def wrap(self, obj, method: str, name: str | None = None) -> None:
        fn = getattr(obj, method)

        @wraps(fn)
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.s[name or method] += time.perf_counter() - t0

        setattr(obj, method, timed)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def one_run(mode: str, args) -> dict:
    root = tempfile.mkdtemp(prefix="async_bench_")
    trainer = AMAGOTrainer(config(mode, root, args.num_collectors, args.warmup + args.epochs, args.num_threads),
                           partial(make_env, env_cost_ms=args.env_cost_ms, env_wait_ms=args.env_wait_ms,
                                   env_cost_per_env_ms=args.env_cost_per_env_ms), None)
    load0 = load()
    try:
        trainer.train(epochs=args.warmup)
        timers = Timers()
        if mode == "sync":
            timers.wrap(trainer.collection, "collect", "acting")
            timers.wrap(trainer.learner, "learn", "learning")
        else:
            timers.wrap(trainer.learner, "update")
            timers.wrap(trainer.collection, "push_weights", "push")
            timers.wrap(trainer, "store")
            timers.wrap(trainer.collection.feed, "get", "wait")
        timers.wrap(trainer, "save")
        steps0, grads0, t0 = trainer.env_steps, trainer.grad_steps, time.perf_counter()
        trainer.train()
        dt = time.perf_counter() - t0
        out = {"env_steps_per_s": (trainer.env_steps - steps0) / dt,
               "updates_per_s": (trainer.grad_steps - grads0) / dt,
               "replay_ratio": (trainer.grad_steps - grads0) / max(trainer.env_steps - steps0, 1),  # timed window
               "epoch_s": dt / args.epochs}
        per_epoch = {k: v / args.epochs for k, v in timers.s.items()}
        if mode == "sync":
            acting, learning = per_epoch["acting"], per_epoch["learning"]
            out.update(acting_s=acting, learning_s=learning, other_s=dt / args.epochs - acting - learning,
                       overlap_bound=(acting + learning) / max(acting, learning, 1e-9))
        else:
            out.update({f"{k}_s": per_epoch.get(k, 0.0) for k in ("update", "wait", "push", "store")})
        out["checkpoint_s"] = per_epoch["save"]
        out["load"] = [load0, load()]
        return out
    finally:
        trainer.close()
        shutil.rmtree(root, ignore_errors=True)


def collectors_bound(acting_s: float, learning_s: float, k: int) -> float:
    """The most K collectors could gain over sync: sync's acting split evenly over K workers, all of it beside
    learning, `(acting + learning) / max(acting / K, learning)` (K = 1: `overlap_bound`)."""
    return (acting_s + learning_s) / max(acting_s / k, learning_s, 1e-9)


def summary(mode: str, rs: list[dict], sync: list[dict], args) -> dict:
    out = {"mode": mode, "num_collectors": args.num_collectors if mode != "sync" else 0,
           "env_cost_ms": args.env_cost_ms, "env_cost_per_env_ms": args.env_cost_per_env_ms,
           "env_wait_ms": args.env_wait_ms, "num_threads": args.num_threads}
    for k in rs[0]:
        if k != "load":
            out[k] = statistics.median(r[k] for r in rs)
    if mode != "sync":  # paired with the sync run of the same round
        speedups = [min(a["env_steps_per_s"] / s["env_steps_per_s"], a["updates_per_s"] / s["updates_per_s"])
                    for a, s in zip(rs, sync)]
        fractions = [sp / s["overlap_bound"] for sp, s in zip(speedups, sync)]
        k = max(args.num_collectors, 1)
        split = [collectors_bound(s["acting_s"], s["learning_s"], k) for s in sync]
        for r, sp, f, b in zip(rs, speedups, fractions, split):
            r.update(speedup=sp, fraction_of_bound=f, collectors_bound=b, fraction_of_collectors_bound=sp / b)
        out.update(speedup=statistics.median(speedups), fraction_of_bound=statistics.median(fractions),
                   best_fraction_of_bound=max(fractions), collectors_bound=statistics.median(split),
                   fraction_of_collectors_bound=statistics.median(sp / b for sp, b in zip(speedups, split)))
    out["rounds"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rs]
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds, 2 warm-up + 4 timed epochs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--num_collectors", type=int, default=1)
    ap.add_argument("--num_threads", type=int, default=None,
                    help="the learner's torch threads in every mode (default: each mode's own default)")
    ap.add_argument("--modes", nargs="+", default=["sync", "async"], choices=MODES,
                    help="modes to compare; sync always runs (it is the reference); distributed = Ray on loopback")
    ap.add_argument("--env_cost_ms", type=float, default=0.0,
                    help="CPU time burnt per batched env step (0: plain T-Maze); shows the overlap on costly envs")
    ap.add_argument("--env_cost_per_env_ms", type=float, default=0.0,
                    help="CPU time burnt per env step, a worker's envs in turn: a simulator whose cost grows with "
                         "its envs; envs split over more collectors on more cores act faster")
    ap.add_argument("--env_wait_ms", type=float, default=0.0,
                    help="wall time waited (sleeping, no CPU) per env step, a worker's envs in turn: envs whose "
                         "latency limits acting; envs split over more collectors act faster, even on 2 cores")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.epochs = 3, 2, 4
    modes = ["sync"] + [m for m in args.modes if m != "sync"]
    warnings.filterwarnings("ignore")
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # stdout carries only the JSON lines
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            runs[mode].append(one_run(mode, args))
    for mode in modes:
        print(json.dumps(summary(mode, runs[mode], runs["sync"], args)), flush=True)


if __name__ == "__main__":
    main()
