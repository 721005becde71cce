"""Per-step acting latency of AMAGOPolicy (MLP timestep encoder -> trajectory encoder in step mode -> discrete
actor), in eval mode under no_grad, at a FULL cache of the given length. One JSON object per line.

    python benchmarks/encoder_step.py            # full grid: d_model {128, 256} x envs {1, 8, 64} x cache {16, 256, 2048}
    python benchmarks/encoder_step.py --quick    # d_model 128, 8 envs only (< 60 s)

A step must cost O(cache length) (attention over the cache), not O(cache length^2) (re-running the window):
the last line reports the 2048/256 latency ratio for the transformer at d_model 128 with 8 envs.
Recorded runs (machine, date, versions, command): docs/results/speed/encoder_step.json.

    python benchmarks/encoder_step.py --original PATH [--original-python PY] [--repeat R]

also times the original AMAGO's acting step (`Agent.get_actions` with its KV cache kept full, the same widths; see
benchmarks/original_amago.py) at d_model 128, 8 envs, caches 16 / 256 / 2048, in a worker process of PY that imports
the checkout PATH (never a dependency; no code of it is in this repository), interleaved with ours `--repeat` times
(default 3), and prints per cache length {"compare": "acting_step", "ours_ms_per_step", "original_ms_per_step",
"ratio": original / ours} (medians), then each system's 2048/256 ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from tensordict import TensorDict

from torchrl_amago.modules.heads import ActorHead
from torchrl_amago.modules.policy import AMAGOPolicy
from torchrl_amago.modules.timestep import MLPTimestepEncoder
from torchrl_amago.modules.trajectory import KVCacheState, make_trajectory_encoder
from torchrl_amago.spaces import ActionSpace

OBS_DIM, N_ACTIONS = 16, 4


def build_policy(encoder: str, d_model: int, cache_len: int, device) -> AMAGOPolicy:
    space = ActionSpace("discrete", N_ACTIONS)
    tstep = MLPTimestepEncoder({"observation": (OBS_DIM,)}, N_ACTIONS, d_hidden=128, d_output=128)
    kw = {"n_heads": 8} if encoder == "transformer" else {}
    traj = make_trajectory_encoder(encoder, tstep.emb_dim, cache_len, d_model=d_model, n_layers=2, **kw)
    head = ActorHead(traj.emb_dim, space, num_gammas=7, d_hidden=128)
    return AMAGOPolicy(tstep, traj, head, space).to(device).eval()


def make_td(n: int, t: int, device, is_init: bool = False) -> TensorDict:
    return TensorDict(observation=torch.randn(n, OBS_DIM), prev_action=torch.zeros(n, N_ACTIONS),
                      prev_reward=torch.zeros(n, 1), time_idx=torch.full((n, 1), t, dtype=torch.long),
                      is_init=torch.full((n, 1), is_init), batch_size=[n]).to(device)


def prefill(policy: AMAGOPolicy, n: int, cache_len: int, device) -> int:
    """Allocate the state and make the KV cache full (random keys/values); returns the next time index."""
    policy.reset_state()
    policy(make_td(n, 0, device, is_init=True))
    state = policy.state
    if isinstance(state, KVCacheState):
        state.k.normal_()
        state.v.normal_()
        state.lengths.fill_(cache_len)  # ring buffer full: every step attends over cache_len tokens
    return cache_len


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(policy: AMAGOPolicy, n: int, t0: int, device, min_time: float, min_iters: int = 10) -> float:
    tds = [make_td(n, t0 + i, device) for i in range(8)]
    for i in range(3):  # warm-up
        policy(tds[i % 8])
    sync(device)
    times, start_all, i = [], time.perf_counter(), 0
    while i < min_iters or time.perf_counter() - start_all < min_time:
        td = tds[i % 8]
        s = time.perf_counter()
        policy(td)
        sync(device)
        times.append(time.perf_counter() - s)
        i += 1
        if i >= 2000:
            break
    return 1e3 * statistics.median(times)


def run_vs_original(args) -> None:
    """Ours and the original's acting step (benchmarks/original_amago.py worker) at d_model 128, 8 envs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from original_amago import OriginalWorker, check_original_path

    try:
        check_original_path(args.original)  # a missing checkout fails before anything is built
    except ValueError as e:
        raise SystemExit(f"encoder_step.py: error: {e}") from None
    if args.device != "cpu":
        raise SystemExit(f"--original times both on the CPU; drop --device {args.device}")
    device, n, cache_lens = torch.device("cpu"), 8, [16, 256, 2048]
    min_time = args.min_time if args.min_time is not None else 1.0
    worker = OriginalWorker(args.original, 1, n, torch.get_num_threads(), python=args.original_python,
                            eager=args.original_eager, acting=True)
    ours, orig = {L: [] for L in cache_lens}, {L: [] for L in cache_lens}
    try:
        for r in range(args.repeat):
            for L in cache_lens:
                for who in (("ours", "original") if r % 2 == 0 else ("original", "ours")):
                    if who == "ours":
                        torch.manual_seed(0)
                        policy = build_policy("transformer", 128, L, device)
                        ours[L].append(time_steps(policy, n, prefill(policy, n, L, device), device, min_time))
                        del policy
                    else:
                        orig[L].append(worker.step(L, L, min_time)["ms_per_step"])
    finally:
        worker.close()
    med = {who: {L: statistics.median(xs[L]) for L in cache_lens} for who, xs in (("ours", ours), ("original", orig))}
    for L in cache_lens:
        print(json.dumps({"compare": "acting_step", "d_model": 128, "n_envs": n, "cache_len": L,
                          "ours_ms_per_step": round(med["ours"][L], 4),
                          "original_ms_per_step": round(med["original"][L], 4),
                          "ratio": round(med["original"][L] / med["ours"][L], 3),
                          "ours_runs": [round(x, 4) for x in ours[L]], "original_runs": [round(x, 4) for x in orig[L]],
                          "threads": torch.get_num_threads(), "original_eager": args.original_eager,
                          "original_versions": worker.versions}), flush=True)
    print(json.dumps({who: {"ratio_2048_over_256": round(m[2048] / m[256], 3)} for who, m in med.items()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="d_model 128 with 8 envs only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of timed steps per config")
    ap.add_argument("--original", metavar="PATH", default=None,
                    help="also time the original AMAGO's acting step, imported from this checkout (CPU)")
    ap.add_argument("--original-python", metavar="PY", default=None,
                    help="the interpreter that imports --original (its own venv); default: this one")
    ap.add_argument("--original-eager", action="store_true",
                    help="run the original with TORCHDYNAMO_DISABLE=1 (without its torch.compile decorators)")
    ap.add_argument("--repeat", type=int, default=3, help="with --original: interleaved rounds (medians reported)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.original:
        return run_vs_original(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    d_models = [128] if args.quick else [128, 256]
    n_envs_list = [8] if args.quick else [1, 8, 64]
    cache_lens = [16, 256, 2048]
    min_time = args.min_time if args.min_time is not None else (0.5 if args.quick else 1.0)
    results = {}
    for d_model in d_models:
        for n in n_envs_list:
            for cache_len in cache_lens:
                policy = build_policy("transformer", d_model, cache_len, device)
                t0 = prefill(policy, n, cache_len, device)
                ms = time_steps(policy, n, t0, device, min_time)
                results[(d_model, n, cache_len)] = ms
                print(json.dumps({"encoder": "transformer", "d_model": d_model, "n_envs": n, "cache_len": cache_len,
                                  "ms_per_step": round(ms, 4), "device": device.type}), flush=True)
                del policy
            policy = build_policy("gru", d_model, 16, device)
            prefill(policy, n, 16, device)
            ms = time_steps(policy, n, 16, device, min_time)
            print(json.dumps({"encoder": "gru", "d_model": d_model, "n_envs": n, "cache_len": None,
                              "ms_per_step": round(ms, 4), "device": device.type}), flush=True)
    if (128, 8, 2048) in results and (128, 8, 256) in results:
        print(json.dumps({"ratio_2048_over_256": round(results[(128, 8, 2048)] / results[(128, 8, 256)], 3)}))


if __name__ == "__main__":
    main()
