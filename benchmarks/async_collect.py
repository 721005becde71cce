"""Acting and learning at once: env steps/s and updates/s of the trainer with --collect sync vs --collect async.

Settings: `examples/04_tmaze.py --horizon 50` with 8 envs (Transformer d_model 128, 2 layers, timestep encoder 128,
batch 24, windows of 51 steps, 51 env steps per env per epoch, 40 updates per epoch: 0.098 updates per env step
in both modes; async holds it with `--replay_ratio`). Each run trains `--warmup` epochs, then times `--epochs`
epochs: `env_steps_per_s` = env steps stored / wall time, `updates_per_s` = updates / wall time (both over the
same wall time, eval off). Modes alternate in rounds (sync, async, sync, ...), so a busy machine disturbs both
alike; one JSON line per mode gives the medians over rounds and the per-round values.

    python benchmarks/async_collect.py --quick       # 3 rounds of 4 timed epochs (~5 min on 2 cores)
    python benchmarks/async_collect.py --num_collectors 2 --rounds 5
    python benchmarks/async_collect.py --quick --env_cost_ms 20   # a costly env: 20 ms of CPU per batched step

Threads: sync uses torch's default (every core) for its one process; async gives each collector worker 1 thread
and leaves the learner torch's default (the trainer's default).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
import warnings

from functools import partial

from torchrl.envs import Transform, TransformedEnv

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, TrainConfig

HORIZON = 50


class CpuCostPerStep(Transform):
    """Burns `ms` of CPU per batched env step (a stand-in for a simulator that costs more than T-Maze's ~0.05 ms)."""

    def __init__(self, ms: float):
        super().__init__()
        self.ms = ms

    def _step(self, tensordict, next_tensordict):
        end = time.perf_counter() + self.ms / 1000
        while time.perf_counter() < end:
            pass
        return next_tensordict


def make_env(n: int, env_cost_ms: float = 0.0):
    env = make_amago_env(TMaze(n, corridor_length=HORIZON, passive=True, penalty=-1.0 / (HORIZON + 1)))
    return env if env_cost_ms <= 0 else TransformedEnv(env, CpuCostPerStep(env_cost_ms))


def config(mode: str, root: str, num_collectors: int, epochs: int) -> TrainConfig:
    trial = HORIZON + 1
    return TrainConfig(run_name=f"bench_{mode}", buffer_dir=root, collect=mode, num_collectors=num_collectors,
                       parallel_envs=8, timesteps_per_epoch=trial, grads_per_epoch=40, epochs=epochs,
                       max_seq_len=trial, memory_size=128, memory_layers=2, tstep_layers=2, tstep_hidden=128,
                       tstep_out=128, tstep_normalize_inputs=False, batch_size=24, eval_interval=0,
                       sample_actions_train=False, reward_multiplier=100.0, gamma=0.9999, lr_warmup_steps=100,
                       learning_rate=3e-4, ckpt_interval=0, progress_bar=False, dset_max_size=200_000)


def one_run(mode: str, num_collectors: int, warmup: int, epochs: int, env_cost_ms: float = 0.0) -> dict:
    root = tempfile.mkdtemp(prefix="async_bench_")
    trainer = AMAGOTrainer(config(mode, root, num_collectors, warmup + epochs),
                           partial(make_env, env_cost_ms=env_cost_ms), None)
    try:
        trainer.train(epochs=warmup)
        steps0, grads0, t0 = trainer.env_steps, trainer.grad_steps, time.perf_counter()
        trainer.train()
        dt = time.perf_counter() - t0
        return {"env_steps_per_s": (trainer.env_steps - steps0) / dt, "updates_per_s": (trainer.grad_steps - grads0) / dt,
                "replay_ratio": (trainer.grad_steps - grads0) / max(trainer.env_steps - steps0, 1)}  # timed window
    finally:
        trainer.close()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds, 2 warm-up + 4 timed epochs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--num_collectors", type=int, default=1)
    ap.add_argument("--env_cost_ms", type=float, default=0.0,
                    help="CPU time burnt per batched env step (0: plain T-Maze); shows the overlap on costly envs")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.epochs = 3, 2, 4
    warnings.filterwarnings("ignore")
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # stdout carries only the JSON lines
    runs: dict[str, list[dict]] = {"sync": [], "async": []}
    for _ in range(args.rounds):
        for mode in runs:
            runs[mode].append(one_run(mode, args.num_collectors, args.warmup, args.epochs, args.env_cost_ms))
    for mode, rs in runs.items():
        out = {"mode": mode, "num_collectors": args.num_collectors if mode == "async" else 0,
               "env_cost_ms": args.env_cost_ms,
               "env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in rs),
               "updates_per_s": statistics.median(r["updates_per_s"] for r in rs),
               "replay_ratio": statistics.median(r["replay_ratio"] for r in rs),
               "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rs]}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
