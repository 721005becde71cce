"""The GPU table in one command: prints one JSON object per measurement, for the first session with a CUDA GPU.

    python benchmarks/gpu_suite.py                 # everything (~5-15 min on an A100/H100)
    python benchmarks/gpu_suite.py --quick         # T <= 2048, fewer cache lengths, coarse horizon search

1. `learner`: full AMAGO updates (the setting of `benchmarks/learner_update.py`: Transformer d_model 128, 2 layers,
   8 heads, batch 24, 7 gammas, 4 critics) at T = 128 ... 8192, SDPA vs FlashAttention (flash only when
   `flash-attn` is installed) x fp32 vs bf16 autocast: `updates_per_s` and `peak_mem_mb`
   (torch.cuda.max_memory_allocated), or `"oom": true`; eager and with the whole loss compiled
   (`--compile-loss`, default: no and reduce-overhead, i.e. CUDA graphs), and with the whole update captured as
   CUDA graphs by hand (`"cuda_graph": true`, the trainer's `--cuda_graph`; `--no-cuda-graph` leaves them out).
2. `acting`: per-step latency of the acting policy at a full KV cache of 128 ... 8192 tokens (8 envs).
3. `tmaze_horizon`: the longest T-Maze horizon (trial = horizon + 1 steps, one window per trial, as
   `examples/04_tmaze.py`) whose learner update fits in GPU memory at d_model 128, batch 24, bf16, doubling from
   1,024 and then bisecting to 5% (synthetic 10-d observations: the sequence, not the observation, fills memory).

Without CUDA it exits at once with a message saying so (exit status 2) and measures nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from torchrl_amago.trainers.scale.device import COMPILE_MODES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NO_CUDA = ("benchmarks/gpu_suite.py measures the CUDA paths and needs a CUDA GPU: torch.cuda.is_available() is "
           "False here (torch {torch}, built with CUDA {cuda}). Nothing was measured; run it on a GPU machine "
           "(CPU numbers: benchmarks/learner_update.py, benchmarks/encoder_step.py).")


def _emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def learner_point(T: int, attention: str, bf16: bool, device, batch: int = 24, min_time: float = 3.0,
                  compile_loss: str = "no", cuda_graph: bool = False) -> dict:
    """One setting; updates/s and peak memory, or oom."""
    from learner_update import bench

    rec = {"bench": "learner", "seq_len": T, "batch": batch, "attention": attention, "bf16": bf16,
           "compile_loss": compile_loss, "cuda_graph": cuda_graph}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        res = bench(T, batch, 128, 2, 8, device, False, min_time=min_time, min_updates=3,
                    warmup=4 if compile_loss != "no" or cuda_graph else 2, bf16=bf16, repeats=1,
                    attention=attention, compile_loss=compile_loss, cuda_graph=cuda_graph)
    except RuntimeError as e:
        if not _is_oom(e):
            raise
        torch.cuda.empty_cache()
        return {**rec, "oom": True}
    return {**rec, "updates_per_s": res["updates_per_s"], "timesteps_per_s": res["timesteps_per_s"],
            "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "oom": False}


def fits(T: int, device) -> bool:
    """One bf16 learner update at window T + 1 (a T-Maze horizon T) fits in memory."""
    rec = learner_point(T + 1, "auto", True, device, min_time=0.0)
    return not rec["oom"]


def longest_horizon(device, start: int = 1024, limit: int = 1 << 20, tol: float = 0.05) -> dict:
    lo, hi = 0, None
    h = start
    while h <= limit:
        if fits(h, device):
            lo, h = h, 2 * h
        else:
            hi = h
            break
    if hi is None:
        return {"bench": "tmaze_horizon", "longest_horizon": lo, "note": f"did not run out of memory up to {limit}"}
    while hi - lo > max(1, int(tol * lo)):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid, device) else (lo, mid)
    return {"bench": "tmaze_horizon", "longest_horizon": lo, "first_oom_horizon": hi, "d_model": 128, "batch": 24,
            "bf16": True}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="T <= 2048, cache <= 2048, coarse horizon search")
    ap.add_argument("--skip", nargs="*", default=[], choices=["learner", "acting", "tmaze_horizon"])
    ap.add_argument("--compile-loss", nargs="*", default=["no", "reduce-overhead"], choices=COMPILE_MODES,
                    help="learner rows per torch.compile mode of the whole loss (reduce-overhead: CUDA graphs)")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=None, help="learner rows at these T only")
    ap.add_argument("--no-cuda-graph", action="store_true", help="no learner rows with the update captured as CUDA "
                    "graphs (the trainer's --cuda_graph)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA.format(torch=torch.__version__, cuda=torch.version.cuda), file=sys.stderr)
        return 2
    from torchrl_amago._optional import available

    device = torch.device("cuda")
    _emit({"bench": "device", "name": torch.cuda.get_device_name(device), "torch": torch.__version__,
           "cuda": torch.version.cuda, "flash_attn_installed": available("flash_attn"),
           "bf16_supported": torch.cuda.is_bf16_supported(), "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    seq_lens = args.seq_lens or ([128, 512, 2048] if args.quick else [128, 512, 2048, 4096, 8192])
    if "learner" not in args.skip:
        attentions = ["sdpa"] + (["flash"] if available("flash_attn") else [])
        for T in seq_lens:
            for attention in attentions:
                for bf16 in (False, True):
                    for mode in args.compile_loss:
                        _emit(learner_point(T, attention, bf16, device, compile_loss=mode))
                    if not args.no_cuda_graph:
                        _emit(learner_point(T, attention, bf16, device, cuda_graph=True))
        if not available("flash_attn"):
            _emit({"bench": "learner", "attention": "flash", "skipped": "pip install flash-attn to measure it"})
    if "acting" not in args.skip:
        from encoder_step import build_policy, prefill, time_steps

        for cache_len in ([128, 2048] if args.quick else [128, 512, 2048, 8192]):
            policy = build_policy("transformer", 128, cache_len, device)
            t0 = prefill(policy, 8, cache_len, device)
            ms = time_steps(policy, 8, t0, device, min_time=0.5)
            _emit({"bench": "acting", "cache_len": cache_len, "n_envs": 8, "d_model": 128, "ms_per_step": round(ms, 4)})
            del policy
    if "tmaze_horizon" not in args.skip:
        _emit(longest_horizon(device, tol=0.25 if args.quick else 0.05))
    return 0


if __name__ == "__main__":
    sys.exit(main())
