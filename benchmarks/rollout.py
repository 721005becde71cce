"""Rollout throughput: env steps/s of the builtin T-Maze acting with AMAGOPolicy through a TorchRL Collector.

Stack: ``make_amago_env(TMaze(n_envs, corridor_length))`` -> ``Collector`` with the policy
``TensorDictSequential(AMAGOPolicy(MLPTimestepEncoder -> TransformerTrajEncoder(d_model 128, 2 layers, 8 heads)
-> ActorHead(7 gammas)), EpsilonGreedy)``; ``frames_per_batch = n_envs * steps``. One batch is collected as
warm-up, then ``--batches`` batches are timed. One JSON object per line::

    {"env": "tmaze", "encoder": "transformer", "n_envs": 8, "env_steps_per_s": ..., "env_steps_per_cpu_s": ...}

``env_steps_per_s`` is wall-clock throughput (median over ``--repeat`` runs); ``env_steps_per_cpu_s`` divides by
the process CPU time instead, which is steadier on a shared machine (with 2 threads it counts both).
``parts_cpu_ms_per_step`` says where one step of the batched env goes (process CPU ms per call of ``env.step``, i.e.
per ``n_envs`` env steps, over the timed batches of the last run): ``policy`` (AMAGOPolicy: of it ``timestep_encoder``,
``memory`` (the trajectory encoder's step) and ``actor_head``), ``exploration`` (EpsilonGreedy), ``env`` (the builtin
env's own step and resets), ``transforms`` (make_amago_env's TorchRL transforms around it) and ``collector`` (the rest
of TorchRL's Collector loop: moving ``next`` to the root, writing the batch, trajectory ids).

    python benchmarks/rollout.py            # transformer at 8, 64, 512 envs + GRU at 8, 64, 512
    python benchmarks/rollout.py --quick    # transformer at 8 envs only (< 60 s)

No figure of the original is quoted here: its acting loop (gymnasium vector envs in subprocess actors driven by
`Experiment.interact`) was not run beside this benchmark, so there is no measured ratio (the original's acting
*step* is timed by `benchmarks/encoder_step.py --original`).

Threads: with few envs every op is tiny, and on a machine whose cores are busy with other work, ``--threads 2`` can be
~10x slower than ``--threads 1`` (intra-op parallel regions, e.g. the CPU SDPA kernel and LayerNorm, wait for the
second thread to be scheduled); compare both before trusting a number.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from torchrl_amago.envs import EpsilonGreedy, TMaze, make_amago_env
from torchrl_amago.modules import ActorHead, AMAGOPolicy, MLPTimestepEncoder, make_trajectory_encoder
from torchrl_amago.spaces import action_space_from_spec


def build(n_envs: int, encoder: str, corridor: int, max_seq_len: int, seed: int = 0):
    torch.manual_seed(seed)
    env = make_amago_env(TMaze(n_envs, corridor_length=corridor, seed=seed))
    space = action_space_from_spec(env.action_spec)
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=128, d_output=128)
    kw = {"n_heads": 8} if encoder == "transformer" else {}
    traj = make_trajectory_encoder(encoder, tstep.emb_dim, max_seq_len, d_model=128, n_layers=2, **kw)
    head = ActorHead(traj.emb_dim, space, num_gammas=7, d_hidden=128)
    policy = AMAGOPolicy(tstep, traj, head, space)
    explore = EpsilonGreedy(env.action_spec, eps_start=1.0, eps_end=0.05, steps_anneal=100_000, seed=seed)
    return env, TensorDictSequential(policy, explore)


class PartTimer:
    """Process CPU time spent inside chosen methods of chosen objects (instance attributes wrap the methods)."""

    def __init__(self):
        self.cpu: dict[str, float] = {}

    def wrap(self, obj, method: str, part: str) -> None:
        inner = getattr(obj, method)
        self.cpu.setdefault(part, 0.0)

        def timed(*args, **kwargs):
            t0 = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.cpu[part] += time.process_time() - t0
        setattr(obj, method, timed)

    def reset(self) -> None:
        self.cpu = dict.fromkeys(self.cpu, 0.0)


def watch_parts(env, policy) -> PartTimer:
    """A PartTimer on the parts of one step (the module docstring's ``parts_cpu_ms_per_step``)."""
    parts = PartTimer()
    amago, explore = policy[0], policy[1]
    parts.wrap(amago, "forward", "policy")
    parts.wrap(amago.timestep_encoder, "forward", "timestep_encoder")
    parts.wrap(amago, "_memory_step", "memory")
    parts.wrap(amago.actor_head, "forward", "actor_head")
    parts.wrap(amago.actor_head, "act", "actor_head")
    parts.wrap(explore, "forward", "exploration")
    for method in ("_step", "_reset"):
        parts.wrap(env.base_env, method, "env")
        parts.wrap(env, method, "env_and_transforms")
    return parts


def measure(n_envs: int, encoder: str, steps: int, batches: int, corridor: int, max_seq_len: int,
            max_seconds: float | None = None) -> tuple:
    """(wall env steps/s, process-CPU env steps/s, CPU ms per batched env step by part) over `batches` collector
    batches after one warm-up batch (fewer if `max_seconds` of timed collection have passed; at least one)."""
    env, policy = build(n_envs, encoder, corridor, max_seq_len)
    parts = watch_parts(env, policy)
    fpb = n_envs * steps
    # same device arguments as AMAGOTrainer (no per-step TensorDict casts)
    coll = Collector(env, policy, frames_per_batch=fpb, total_frames=fpb * (batches + 1),
                     policy_device=env.device, env_device=env.device, storing_device="cpu")
    it = iter(coll)
    next(it)  # warm-up batch (allocation, first KV cache, lazy specs)
    parts.reset()
    start, cpu0, frames = time.perf_counter(), time.process_time(), 0
    for data in it:
        frames += data.numel()
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    coll.shutdown()
    p, per_step = parts.cpu, 1e3 * n_envs / frames  # seconds -> ms per batched step
    split = {"policy": p["policy"], "timestep_encoder": p["timestep_encoder"], "memory": p["memory"],
             "actor_head": p["actor_head"], "exploration": p["exploration"], "env": p["env"],
             "transforms": p["env_and_transforms"] - p["env"],
             "collector": cpu - p["policy"] - p["exploration"] - p["env_and_transforms"]}
    return frames / elapsed, frames / cpu, {k: round(v * per_step, 4) for k, v in split.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="transformer at 8 envs only (< 60 s)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--n-envs", type=int, nargs="+", default=None, help="env counts (default 8 64 512)")
    ap.add_argument("--encoders", nargs="+", default=None, choices=["transformer", "gru"],
                    help="acting encoders (default: transformer gru; --quick: transformer)")
    ap.add_argument("--steps", type=int, default=None, help="env steps per env per collector batch")
    ap.add_argument("--batches", type=int, default=None, help="timed batches after the warm-up batch (3; --quick 10)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop timing a config after this many seconds (default: none; --quick: 15)")
    ap.add_argument("--repeat", type=int, default=1, help="measure each config this many times; report the median")
    ap.add_argument("--corridor", type=int, default=100, help="T-Maze corridor length")
    ap.add_argument("--max-seq-len", type=int, default=128, help="transformer context (KV cache length)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchrl 0.15 default-change notices
    n_envs_list = args.n_envs or ([8] if args.quick else [8, 64, 512])
    encoders = args.encoders or (["transformer"] if args.quick else ["transformer", "gru"])
    for encoder in encoders:
        for n in n_envs_list:
            steps = args.steps or (50 if args.quick else 200 if n <= 8 else 100 if n <= 64 else 50)
            batches = args.batches or (10 if args.quick else 3)
            max_seconds = args.max_seconds if args.max_seconds is not None else (15.0 if args.quick else None)
            runs = [measure(n, encoder, steps, batches, args.corridor, args.max_seq_len, max_seconds)
                    for _ in range(args.repeat)]
            wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
            print(json.dumps({"env": "tmaze", "encoder": encoder, "n_envs": n,
                              "env_steps_per_s": round(statistics.median(wall), 1),
                              "env_steps_per_cpu_s": round(statistics.median(cpu), 1),
                              "cpu_ms_per_step": round(1e3 * n / statistics.median(cpu), 4),
                              "parts_cpu_ms_per_step": runs[-1][2],
                              "runs": [round(w, 1) for w in wall], "steps_per_batch": steps, "max_batches": batches,
                              "corridor_length": args.corridor, "max_seq_len": args.max_seq_len,
                              "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
