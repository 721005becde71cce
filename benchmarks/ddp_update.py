"""Data-parallel learner cost: trainer updates/s per rank under torchrun vs one process, and the share of an
update spent in DDP's gradient all-reduce. Settings: `examples/04_tmaze.py --horizon 50` (Transformer d_model 128,
2 layers, timestep encoder 128, batch 24 per rank, windows of 51 steps); batches are real T-Maze rollouts.

    python benchmarks/ddp_update.py                                 # 1 process (the reference)
    torchrun --nproc_per_node 2 benchmarks/ddp_update.py            # 2 ranks (gloo on CPU, nccl with --device cuda)

Rank 0 prints one JSON line: `updates_per_s` (the trainer's `update()`: DDP forward/backward with the all-reduce,
clip, AdamW, SoftUpdate), `updates_per_s_no_allreduce` (the same inside DDP's `no_sync()`: the gradient all-reduce
skipped, PopArt/InputNorm moments still all-reduced) and `allreduce_share` = 1 - no_sync time / full time
(0 for one process). Timings alternate between the two modes in rounds, so a busy machine disturbs both alike.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings

import torch

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.trainers import LONG_HORIZON_PRESET, AMAGOTrainer, TrainConfig

HORIZON = 50


def make_env(n: int):
    return make_amago_env(TMaze(n, corridor_length=HORIZON, passive=True, penalty=-1.0 / (HORIZON + 1)))


class OneBatch:
    def __init__(self, batch):
        self.batch = batch

    def sample(self):
        return self.batch

    def num_trials(self) -> int:
        return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--updates", type=int, default=5, help="updates per timing round and mode")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--buffer_dir", default=None, help="scratch folder, the same for every rank (default: tmp)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    T = HORIZON + 1
    scratch = args.buffer_dir or os.path.join(tempfile.gettempdir(), "torchrl_amago_ddp_bench")  # same on every rank
    run_name = f"ddp_bench_{os.environ.get('MASTER_PORT', os.getpid())}"
    cfg = TrainConfig(run_name=run_name, buffer_dir=scratch, device=args.device, max_seq_len=T, batch_size=24,
                      parallel_envs=24, tstep_layers=2, tstep_hidden=128, tstep_out=128,
                      tstep_normalize_inputs=False, memory_size=128, memory_layers=2, reward_multiplier=100.0,
                      gamma=0.9999, learning_rate=3e-4, lr_warmup_steps=100, progress_bar=False,
                      eval_interval=0, **LONG_HORIZON_PRESET)  # updates only
    tr = AMAGOTrainer(cfg, make_env, None)
    env = make_env(24)
    env.set_seed(tr.dist.rank)
    batch = env.rollout(T, break_when_any_done=False)  # [24, 51]: one whole trial per env
    batch.set("mask", torch.ones(24, T, dtype=torch.bool))
    tr.sampler = OneBatch(batch)
    ddp = tr.learner.loss_forward if tr.dist.enabled else None
    for _ in range(2):  # warm-up
        tr.learner.update()
    full, skip = [], []
    for _ in range(args.rounds):
        for mode, out in (("full", full), ("no_sync", skip)):
            ctx = ddp.no_sync() if (mode == "no_sync" and ddp is not None) else contextlib.nullcontext()
            tr.dist.barrier()
            t0 = time.perf_counter()
            with ctx:
                for _ in range(args.updates):
                    tr.learner.update()
            out.append((time.perf_counter() - t0) / args.updates)
    per_rank = tr.dist.all_gather_int(int(1e6 * statistics.median(full)))
    t_full, t_skip = statistics.median(full), statistics.median(skip)
    if tr.dist.is_main:
        print(json.dumps({"bench": "ddp_update", "world_size": tr.dist.world_size, "device": str(tr.device),
                          "seq_len": T, "batch_per_rank": 24, "d_model": 128, "threads_per_rank": args.threads,
                          "updates_per_s": round(1 / t_full, 3),
                          "updates_per_s_no_allreduce": round(1 / t_skip, 3),
                          "allreduce_share": round(max(0.0, 1 - t_skip / t_full), 3) if tr.dist.enabled else 0.0,
                          "updates_per_s_per_rank": [round(1e6 / u, 3) for u in per_rank],
                          "global_samples_per_s": round(24 * tr.dist.world_size / t_full, 1),
                          "n_params": sum(p.numel() for p in tr.learner.params),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    tr.close()
    shutil.rmtree(tr.run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
