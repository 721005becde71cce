"""Learner throughput: full AMAGO gradient updates per second on [batch, T] windows.

One update = AMAGOLoss forward (one backbone pass over T+1 steps, target/online heads, PopArt, filtered BC)
+ backward + global grad-norm clip (1.0) + AdamW step + AMAGOSoftUpdate of the target copies. Settings follow the
original's comparison point: Transformer d_model 128, 2 layers, 8 heads, batch 24, discrete actions (4),
10-d observations, 7 gammas, 4 critics; default timestep encoder (512/512 -> 256) and heads (256 hidden).
`--target-encoders` adds the pass of the encoders' target copy that gives every discount's TD targets their s_{t+1}
(`AMAGOLoss(target_encoders=True)`; the original has no such pass).

`--critic twohot` benchmarks the multi-task agent instead (AMAGO-2: two-hot critic with gamma and action as
inputs, 128 bins, filtered BC with 3 sampled actions); `--critic continuous` a 4-d tanh-Gaussian actor with the
action-input critic. Both run the critic once per gamma (and sampled action), as the original. `--critic count` is
the discrete agent with `--count_heads` (the per-action count terms and the counts carried beside the embeddings).

Prints one JSON object per setting, e.g.
{"encoder": "transformer", "d_model": 128, "layers": 2, "seq_len": 128, "batch": 24, "updates_per_s": ...,
 "timesteps_per_s": ...}
`updates_per_s` is the median over `--repeats` timing windows. `cpu_s_per_update` is process CPU time per
update: on a busy machine, with one thread, it is a better estimate of the quiet-machine time than the wall clock.
`minor_faults_per_update`: pages the process touched for the first time per update (memory the allocator mapped
afresh), system time that glibc's malloc settings change (docs/results/speed/cpu_update.json).
`compile_s` is the warm-up time (it includes torch.compile's compilation with --compile).
`--variable` measures the work of short and variable-length trials instead of full windows: trials with
lengths drawn from a wide distribution (exponential, mean `--mean-trial-len` 30, at least 2 steps) stored in a
real sequence replay with max_seq_len 256 (`--seq-lens`), and each update *samples its batch from the replay*.
It prints one line per mode: `"windows": "fixed"` (every batch padded to max_seq_len), `"trimmed"` (each
batch cut to its longest valid window) and `"packed"` (trimmed, and the loss packs the windows several to a row:
`pack_windows`, the default), interleaved `--repeats` times, with `mean_T`, the mean batch length, `mean_rows`,
the mean rows the loss ran, and `speedup` = trimmed / fixed (trimmed line) and packed / trimmed (packed line).
`--mixed-precision` is the trainer's `--mixed_precision`, with its default (auto: bf16 autocast where the device
computes bf16 natively, see trainers/scale/device.py); every line says which precision it ran (`"precision"`, and
`"bf16"`).
The optimizer is the trainer's: fused AdamW.
Usage: python benchmarks/learner_update.py [--quick] [--long] [--compile] [--compile-loss MODE] [--compile-step] [--vs-eager] [--cuda-graph] [--mixed-precision auto|no|bf16] [--threads N] [--repeats R]
       [--device cpu|cuda] [--batch B] [--seq-lens T ...] [--pack-windows cpu|always|never] [--target-encoders] [--n-step N] [--cql-coeff C]
       [--variable [--mean-trial-len L]]
`--vs-eager` (with `--compile-loss`, `--compile` or `--compile-step`): the same setting eager too, both built from
the same seed, their timing windows alternating in one process (a busy machine's drift falls on both alike); prints
the compiled line, the eager line and {"compare": "compiled_vs_eager", "ratio": compiled / eager updates/s,
"ratio_cpu": eager / compiled CPU s per update, "ratio_cpu_runs": the same per pair of windows}.
`--long`: long context on CPU (batch 4, T = 1,024 / 2,048 / 4,096 unless --seq-lens/--batch say otherwise), each T
in its own subprocess so `peak_rss_mb` (the process's peak resident memory) is per T; a last JSON line compares
the RSS growth with linear growth and with what a materialised [B, heads, T, T] attention matrix would take.
`--original PATH [--original-python PY] [--original-eager]`: also time the original AMAGO's learner update (its
`Agent` at the same comparison point, see benchmarks/original_amago.py), imported from the checkout PATH by the
interpreter PY in a worker process (never a dependency; no code of it is in this repository), its timing windows
interleaved with ours (`--repeats` each, alternating which goes first), both in the precision `--mixed-precision`
chooses (bf16: the original's forward under bf16 autocast, as its `mixed_precision="bf16"`). Prints our line, the
original's line and {"compare": "learner_update", "ratio": ours / original updates/s, "ratio_cpu": original / ours
CPU s per update, "precision": ...}. Recorded runs: docs/results/speed/learner_vs_original.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
from tensordict import TensorDict

from torchrl_amago.data import load_offline_trials, make_sequence_replay
from torchrl_amago.modules.count_heads import CountActorHead, CountDiscreteCritic, CountsBesideEmbedding, CountsPassThrough
from torchrl_amago.modules.heads import ActorHead, ContinuousCritic, DiscreteCritic
from torchrl_amago.modules.timestep import MLPTimestepEncoder
from torchrl_amago.modules.trajectory import make_trajectory_encoder
from torchrl_amago.objectives import DEFAULT_MULTIGAMMAS, DEFAULT_TAU, AMAGOLoss, AMAGOSoftUpdate
from torchrl_amago.objectives.packing import PACK_MODES, plan_packing
from torchrl_amago.spaces import ActionSpace
from torchrl_amago.trainers.config import TrainConfig
from torchrl_amago.trainers.scale.device import COMPILE_MODES, autocast_dtype
from torchrl_amago.trainers.scale.device import compile_loss as compiled_forward
from torchrl_amago.trainers.scale.graphed_update import GraphedUpdate

OBS, ACT, G, C = 10, 4, 7, 4


def make_batch(B: int, T: int, device, continuous: bool = False, counts: bool = False) -> TensorDict:
    td = TensorDict({}, [B, T], device=device)

    def action():
        if continuous:
            return torch.rand(B, T, ACT, device=device) * 2 - 1
        return torch.nn.functional.one_hot(torch.randint(0, ACT, (B, T), device=device), ACT).float()

    for root, shift in (((), 0), (("next",), 1)):
        td.set(root + ("observation",), torch.randn(B, T, OBS, device=device))
        td.set(root + ("prev_action",), action())
        td.set(root + ("prev_reward",), torch.randn(B, T, 1, device=device))
        td.set(root + ("time_idx",), (torch.arange(T, device=device) + shift).view(1, T, 1).expand(B, T, 1).clone())
        if counts:  # --critic count: how often each action was taken so far in the trial
            td.set(root + ("action_counts",), torch.randint(0, 8, (B, T, ACT), device=device).float())
    td.set("action", action() if continuous else torch.randint(0, ACT, (B, T), device=device))
    td.set(("next", "reward"), torch.randn(B, T, 1, device=device))
    td.set(("next", "prev_reward"), td["next", "reward"].clone())  # what make_amago_env writes
    td.set(("next", "terminated"), torch.rand(B, T, 1, device=device) < 0.01)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[: B // 4, T - T // 8:] = False  # some right padding, as replay windows at trial ends
    td.set("mask", mask)
    return td


def build(T: int, d_model: int, layers: int, heads: int, device, compile_: bool, critic: str = "discrete",
          attention: str = "auto", loss_options: dict | None = None):
    """The benchmarked AMAGOLoss; `loss_options` go to its constructor (e.g. target_encoders, n_step). `critic`
    "count" is the discrete agent with `--count_heads` (modules.count_heads)."""
    loss_options = loss_options or {}
    asp = ActionSpace("continuous" if critic == "continuous" else "discrete", ACT)
    te = MLPTimestepEncoder({"observation": (OBS,)}, ACT)
    tr = make_trajectory_encoder("transformer", te.emb_dim, T + 1, d_model=d_model, n_layers=layers, n_heads=heads,
                                 compile=compile_, attention=attention)
    actor = (CountActorHead if critic == "count" else ActorHead)(tr.emb_dim, asp, G)
    gammas = [*DEFAULT_MULTIGAMMAS, 0.999]  # the loss's default: G = 7
    if critic == "twohot":
        return AMAGOLoss.multi_task(te, tr, actor, action_space=asp, num_critics=C, **loss_options).to(device)
    if critic == "continuous":
        head = ContinuousCritic(tr.emb_dim, ACT, gammas, C)
    elif critic == "count":
        head = CountDiscreteCritic(tr.emb_dim, ACT, G, C)
        te, tr = CountsBesideEmbedding(te, ACT), CountsPassThrough(tr, ACT)
    else:
        head = DiscreteCritic(tr.emb_dim, ACT, G, C)
    return AMAGOLoss(te, tr, actor, head, action_space=asp, **loss_options).to(device)


def step_after_backward(opt, updater, params) -> None:
    """Clip 1.0, AdamW, SoftUpdate: the part of an update after backward (`--compile-step` compiles it)."""
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    updater.step()


def update_step(loss_forward, opt, updater, params, batch, bf16: bool, after_backward=step_after_backward) -> None:
    """One full update: loss forward (optionally bf16 autocast), backward, clip 1.0, AdamW, SoftUpdate."""
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = loss_forward(batch)
    opt.zero_grad(set_to_none=True)
    (out["loss_actor"] + out["loss_critic"]).backward()
    after_backward(opt, updater, params)


class Setting:
    """One benchmarked learner setting, built and ready: `update()` runs one full update; `window()` times one."""

    def __init__(self, T: int, B: int, d_model: int, layers: int, heads: int, device, compile_: bool,
                 bf16: bool = False, critic: str = "discrete", attention: str = "auto", pack_windows: str = "cpu",
                 loss_options: dict | None = None, compile_loss: str = "no", cuda_graph: bool = False,
                 compile_step: bool = False):
        torch.manual_seed(0)
        loss = build(T, d_model, layers, heads, device, compile_, critic, attention, loss_options)
        fixed_shape = compile_loss != "no" or cuda_graph  # a compiled or captured loss needs one batch shape
        loss.pack_windows = "never" if fixed_shape else pack_windows
        loss_forward = compiled_forward(loss, compile_loss, trim_windows=False, packs=False)
        updater = AMAGOSoftUpdate(loss, tau=DEFAULT_TAU)
        params = [p for p in loss.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-3, fused=True)  # the trainer's optimizer
        batch = make_batch(B, T, device, continuous=critic == "continuous", counts=critic == "count")
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"--cuda-graph captures CUDA graphs: it needs --device cuda (got {device})")
        if cuda_graph:  # the trainer's --cuda_graph update: two graph replays and one host read of the finite flags
            graphed = GraphedUpdate(loss_forward, lambda out: out["loss_actor"] + out["loss_critic"], opt, params,
                                    1.0, updater, torch.bfloat16 if bf16 else None)
        after_backward = torch.compile(step_after_backward) if compile_step else step_after_backward

        def update():
            if cuda_graph:
                graphed.forward_backward(batch)
                if all(graphed.finite()):
                    graphed.step()
            else:
                update_step(loss_forward, opt, updater, params, batch, bf16, after_backward)

        self.update, self.loss, self.device = update, loss, device
        self.runs, self.cpu_runs, self.n, self.cpu_s, self.faults, self.compile_s = [], [], 0, 0.0, 0, 0.0
        transformer = loss.trajectory_encoder.encoder
        if isinstance(transformer, CountsPassThrough):
            transformer = transformer.encoder
        self.info = {"encoder": "transformer", "d_model": d_model, "layers": layers, "seq_len": T, "batch": B,
                     "critic": critic, "heads": heads, "d_ff": getattr(transformer.layers[0].ff1, "out_features", None),
                     "gammas": G, "critics": C, "compile": compile_, "compile_loss": compile_loss,
                     "compile_step": compile_step, "cuda_graph": cuda_graph, "pack_windows": loss.pack_windows,
                     "target_encoders": loss.target_encoders, "n_step": loss.n_step, "cql_coeff": loss.cql_coeff,
                     "precision": "bf16" if bf16 else "fp32", "bf16": bf16, "device": str(device)}

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def warm_up(self, updates: int) -> None:
        """Untimed updates (torch.compile compiles here), their time added to `compile_s`."""
        t0 = time.perf_counter()
        for _ in range(updates):
            self.update()
        self.sync()
        self.compile_s += time.perf_counter() - t0

    def window(self, min_time: float, min_updates: int) -> None:
        """One timing window: at least `min_updates` updates and `min_time` seconds."""
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        while n < min_updates or time.perf_counter() - t0 < min_time:
            self.update()
            n += 1
            if self.device.type == "cuda" and n % 10 == 0:
                self.sync()
        self.sync()
        self.runs.append(n / (time.perf_counter() - t0))
        self.cpu_runs.append((time.process_time() - c0) / n)
        self.cpu_s += time.process_time() - c0
        self.faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        self.n += n

    def result(self) -> dict:
        ups = statistics.median(self.runs)
        T, B = self.info["seq_len"], self.info["batch"]
        return {**{k: self.info[k] for k in ("encoder", "d_model", "layers", "seq_len", "batch")},
                "updates_per_s": round(ups, 3), "timesteps_per_s": round(ups * B * T, 1),
                "updates_per_s_runs": [round(r, 3) for r in self.runs],
                "cpu_s_per_update": round(self.cpu_s / self.n, 4),
                "minor_faults_per_update": round(self.faults / self.n), **self.info, "updates": self.n,
                "compile_s": round(self.compile_s, 2), "threads": torch.get_num_threads(),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
                "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def bench(T: int, B: int, d_model: int, layers: int, heads: int, device, compile_: bool, min_time: float,
          min_updates: int, warmup: int, bf16: bool = False, repeats: int = 3, critic: str = "discrete",
          attention: str = "auto", pack_windows: str = "cpu", loss_options: dict | None = None,
          compile_loss: str = "no", cuda_graph: bool = False, compile_step: bool = False) -> dict:
    setting = Setting(T, B, d_model, layers, heads, device, compile_, bf16, critic, attention, pack_windows,
                      loss_options, compile_loss, cuda_graph, compile_step)
    setting.warm_up(warmup)
    for _ in range(repeats):
        setting.window(min_time, min_updates)
    return setting.result()


def bench_vs_eager(T: int, B: int, device, min_time: float, min_updates: int, warmup: int, repeats: int,
                   **options) -> list[dict]:
    """`--vs-eager`: the compiled setting (`options`) and the same setting eager, built alike, their timing windows
    alternating in one process (which goes first alternates too): their two lines and a `compare` line."""
    compiled = Setting(T, B, 128, 2, 8, device, **options)
    eager = Setting(T, B, 128, 2, 8, device, **dict(options, compile_=False, compile_loss="no", compile_step=False))
    for s in (compiled, eager):
        s.warm_up(warmup)
    compiled.warm_up(1)  # the eager updates grow tensordict's tensorclass memo, which a compiled graph guards on
    for r in range(repeats):
        for s in ((compiled, eager) if r % 2 == 0 else (eager, compiled)):
            s.window(min_time, min_updates)
    out = [compiled.result(), eager.result()]
    out.append({"compare": "compiled_vs_eager", "seq_len": T, "batch": B, "threads": torch.get_num_threads(),
                "precision": out[0]["precision"], "compile_loss": options.get("compile_loss", "no"),
                "compile": options.get("compile_", False), "compile_step": options.get("compile_step", False),
                "ratio": round(out[0]["updates_per_s"] / out[1]["updates_per_s"], 3),
                "ratio_cpu": round(out[1]["cpu_s_per_update"] / out[0]["cpu_s_per_update"], 3),
                "ratio_cpu_runs": [round(e / c, 3) for c, e in zip(compiled.cpu_runs, eager.cpu_runs)],
                "repeats": repeats})
    return out


def variable_length_replay(T: int, B: int, mean_len: float, trim: bool, n_trials: int = 400):
    """A sequence replay holding `n_trials` trials of exponential(mean_len) length (>= 2 steps, seed 0)."""
    g = torch.Generator().manual_seed(0)
    lengths = (torch.empty(n_trials).exponential_(1.0 / mean_len, generator=g).long() + 2).tolist()
    rb = make_sequence_replay(sum(lengths), T, B, trim=trim, generator=torch.Generator().manual_seed(1))
    trials = []
    for L in lengths:
        td = make_batch(1, L, torch.device("cpu"))[0].exclude("mask")
        td["next", "terminated"][-1] = True
        td["next", "done"] = td["next", "terminated"].clone()
        td["next", "done"][-1] = True
        trials.append(td)
    load_offline_trials(rb, trials)
    return rb, lengths


def bench_variable(T: int, B: int, device, mean_len: float, min_time: float, repeats: int, bf16: bool,
                   loss_options: dict | None = None) -> list[dict]:
    """fixed vs trimmed vs packed windows on the same replay data and model, interleaved; one update includes
    sampling. `packed` = trimmed batches whose windows the loss packs several to a row (`pack_windows`)."""
    torch.manual_seed(0)
    loss = build(T, 128, 2, 8, device, False, loss_options=loss_options)
    updater = AMAGOSoftUpdate(loss, tau=DEFAULT_TAU)
    params = [p for p in loss.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-3, fused=True)
    replays = {mode: variable_length_replay(T, B, mean_len, trim=mode != "fixed")[0]
               for mode in ("fixed", "trimmed", "packed")}
    lengths = variable_length_replay(T, B, mean_len, True, n_trials=400)[1]

    rows = {mode: [] for mode in replays}

    def update(mode) -> int:
        batch = replays[mode].sample().to(device)
        loss.pack_windows = "always" if mode == "packed" else "never"  # "always": packed on any --device
        plan = plan_packing(batch["mask"]) if mode == "packed" else None
        rows[mode].append(batch.shape[0] if plan is None else plan.rows)
        update_step(loss, opt, updater, params, batch, bf16)
        return batch.shape[1]

    runs = {mode: [] for mode in replays}
    seq = {mode: [] for mode in replays}
    for mode in replays:  # warm-up
        update(mode)
    for _ in range(repeats):
        for mode in replays:
            n, t0 = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - t0 < min_time:
                seq[mode].append(update(mode))
                n += 1
            runs[mode].append(n / (time.perf_counter() - t0))
    out = []
    for mode in replays:
        ups = statistics.median(runs[mode])
        out.append({"encoder": "transformer", "windows": mode, "max_seq_len": T, "batch": B,
                    "trial_len_mean": round(statistics.mean(lengths), 1), "trial_len_max": max(lengths),
                    "mean_T": round(statistics.mean(seq[mode]), 1), "mean_rows": round(statistics.mean(rows[mode]), 1),
                    "updates_per_s": round(ups, 3),
                    "updates_per_s_runs": [round(r, 3) for r in runs[mode]], "precision": "bf16" if bf16 else "fp32",
                    "bf16": bf16, "device": str(device),
                    "threads": torch.get_num_threads(),
                    "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None})
    out[1]["speedup"] = round(out[1]["updates_per_s"] / out[0]["updates_per_s"], 2)  # trimmed / fixed
    out[2]["speedup"] = round(out[2]["updates_per_s"] / out[1]["updates_per_s"], 2)  # packed / trimmed
    out[2]["speedup_vs_fixed"] = round(out[2]["updates_per_s"] / out[0]["updates_per_s"], 2)
    return out


def run_long(args) -> None:
    """One subprocess per T (peak RSS is per process), then the linearity summary."""
    seq_lens = args.seq_lens or [1024, 2048, 4096]
    batch = args.batch if args.batch != 24 else 4
    results = []
    for T in seq_lens:
        cmd = [sys.executable, os.path.abspath(__file__), "--seq-lens", str(T), "--batch", str(batch), "--repeats",
               "1", "--device", args.device, "--min-time", "2", "--min-updates", "2", "--warmup", "1"] + (["--threads", str(args.threads)] if args.threads
                                                                    else []) + ["--mixed-precision", args.mixed_precision]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        res = json.loads(lines[-1]) if lines else {"seq_len": T, "error": out.stderr.strip().splitlines()[-1:]}
        print(json.dumps(res), flush=True)
        results.append(res)
    ok = [r for r in results if "peak_rss_mb" in r]
    summary = {"long": True, "batch": batch, "seq_lens": [r["seq_len"] for r in ok],
               "peak_rss_mb": [r["peak_rss_mb"] for r in ok], "updates_per_s": [r["updates_per_s"] for r in ok]}
    if len(ok) >= 2:
        (t0, m0), (t1, m1) = (ok[-2]["seq_len"], ok[-2]["peak_rss_mb"]), (ok[-1]["seq_len"], ok[-1]["peak_rss_mb"])
        slope = (m1 - m0) / (t1 - t0)  # MB per extra step of context
        summary["rss_mb_per_1k_steps"] = round(1000 * slope, 1)
        summary["rss_growth_ratio"] = round(m1 / m0, 3)
        summary["context_ratio"] = round(t1 / t0, 3)
        # what one layer's materialised fp32 attention probabilities (kept for backward) would add at the longest T
        summary["materialised_attention_mb_per_layer"] = round(batch * 8 * t1 * t1 * 4 / 2**20, 1)
    summary["load_avg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    print(json.dumps(summary), flush=True)


def run_vs_original(args) -> None:
    """Ours and the original (a worker process, benchmarks/original_amago.py) in alternating timing windows."""
    from original_amago import OriginalWorker, check_original_path

    try:
        check_original_path(args.original)  # a missing checkout fails before anything is built
    except ValueError as e:
        raise SystemExit(f"learner_update.py: error: {e}") from None
    # both systems in the precision --mixed-precision chooses (the original: bf16 autocast over its forward)
    unsupported = [f for f, on in (("--compile", args.compile),
                                   ("--cuda-graph", args.cuda_graph), ("--compile-loss", args.compile_loss != "no"),
                                   ("--variable", args.variable), ("--critic", args.critic != "discrete")) if on]
    if unsupported or args.device != "cpu":
        raise SystemExit(f"--original compares the eager discrete update on the CPU; drop "
                         f"{', '.join(unsupported) or '--device ' + args.device}")
    min_time = args.min_time or (3.0 if args.quick else 8.0)
    threads = torch.get_num_threads()
    for T in args.seq_lens or [128]:
        worker = OriginalWorker(args.original, T, args.batch, threads, python=args.original_python,
                                eager=args.original_eager, bf16=args.bf16)
        try:
            t0 = time.perf_counter()
            worker.warmup(3)  # the original's torch.compile decorators compile here
            original_warmup_s = time.perf_counter() - t0
            ours, orig, last = [], [], None
            for r in range(args.repeats):
                for who in (("ours", "original") if r % 2 == 0 else ("original", "ours")):
                    if who == "ours":
                        last = bench(T, args.batch, 128, 2, 8, torch.device("cpu"), False, min_time=min_time,
                                     min_updates=args.min_updates, warmup=2, repeats=1, bf16=args.bf16)
                        ours.append((last["updates_per_s"], last["cpu_s_per_update"]))
                    else:
                        o = worker.time(min_time, args.min_updates)
                        orig.append((o["updates"] / o["seconds"], o["cpu_s"] / o["updates"]))
        finally:
            worker.close()
        med = lambda xs, i: statistics.median(x[i] for x in xs)
        load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        last.update(updates_per_s=round(med(ours, 0), 3), timesteps_per_s=round(med(ours, 0) * args.batch * T, 1),
                    updates_per_s_runs=[round(x[0], 3) for x in ours], cpu_s_per_update=round(med(ours, 1), 4),
                    cpu_s_per_update_runs=[round(x[1], 4) for x in ours], updates=None, load_avg_1m=load)
        print(json.dumps(last), flush=True)
        print(json.dumps({"system": "original", "seq_len": T, "batch": args.batch, "d_model": 128, "layers": 2,
                          "heads": 8, "updates_per_s": round(med(orig, 0), 3),
                          "updates_per_s_runs": [round(x[0], 3) for x in orig],
                          "cpu_s_per_update": round(med(orig, 1), 4),
                          "cpu_s_per_update_runs": [round(x[1], 4) for x in orig],
                          "warmup_s": round(original_warmup_s, 1), "precision": "bf16" if args.bf16 else "fp32",
                          "versions": worker.versions, "load_avg_1m": load}), flush=True)
        print(json.dumps({"compare": "learner_update", "seq_len": T, "batch": args.batch, "threads": threads,
                          "ours_updates_per_s": round(med(ours, 0), 3),
                          "original_updates_per_s": round(med(orig, 0), 3),
                          "ratio": round(med(ours, 0) / med(orig, 0), 3),
                          "ratio_cpu": round(med(orig, 1) / med(ours, 1), 3),
                          "original_eager": args.original_eager, "precision": "bf16" if args.bf16 else "fp32",
                          "repeats": args.repeats}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only T=128, short timing (< 60 s)")
    ap.add_argument("--long", action="store_true", help="long context: batch 4, T = 1024/2048/4096, each T in its "
                    "own subprocess, with peak RSS per T")
    ap.add_argument("--min-time", type=float, default=None, help="seconds per timing window (default 3 quick / 8)")
    ap.add_argument("--min-updates", type=int, default=3, help="updates per timing window, at least")
    ap.add_argument("--warmup", type=int, default=None, help="untimed updates first (default 2, 3 with --compile)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the Transformer layer stack")
    ap.add_argument("--compile-loss", choices=COMPILE_MODES, default="no",
                    help="torch.compile the whole loss forward and backward with this mode, as the trainer's "
                         "--compile_loss (one window per row)")
    ap.add_argument("--compile-step", action="store_true",
                    help="torch.compile the rest of the update (clip, AdamW, target update); with --compile-loss: "
                         "all of it but the backward call")
    ap.add_argument("--vs-eager", action="store_true",
                    help="with --compile-loss / --compile / --compile-step: the same setting eager as well, built "
                         "alike, timing windows alternating in one process; prints both lines and their ratio")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="the whole update captured as CUDA graphs, as the trainer's --cuda_graph (CUDA only)")
    ap.add_argument("--mixed-precision", choices=("auto", "no", "bf16"), default=TrainConfig.mixed_precision,
                    help="the trainer's --mixed_precision: bf16 autocast for the loss forward (fp32 master weights; "
                    "the loss keeps targets, PopArt and distributions in fp32)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="timing windows per setting; the median is reported")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=None)
    ap.add_argument("--critic", choices=["discrete", "twohot", "continuous", "count"], default="discrete",
                    help="critic head: the original's discrete default, the multi-task two-hot one, continuous, or "
                         "the discrete agent with --count_heads (count)")
    ap.add_argument("--pack-windows", choices=PACK_MODES, default="cpu",
                    help="the loss's pack_windows for full windows (nothing to pack; 'always' measures the plan's "
                         "cost, a host sync on CUDA)")
    ap.add_argument("--target-encoders", action="store_true",
                    help="AMAGOLoss(target_encoders=True): every discount's TD targets from Polyak-averaged encoders "
                         "(one more encoder forward per update)")
    ap.add_argument("--n-step", type=int, default=1, help="AMAGOLoss(n_step=N): N-step TD targets")
    ap.add_argument("--cql-coeff", type=float, default=0.0,
                    help="AMAGOLoss(cql_coeff=...): the conservative critic term (per-action critics)")
    ap.add_argument("--variable", action="store_true",
                    help="variable-length trials sampled from a replay: fixed vs trimmed vs packed windows "
                         "(max_seq_len 256)")
    ap.add_argument("--mean-trial-len", type=float, default=30.0, help="mean trial length for --variable")
    ap.add_argument("--original", metavar="PATH", default=None,
                    help="also time the original AMAGO imported from this checkout, interleaved with ours "
                         "(discrete critic, eager, both in --mixed-precision's choice; see "
                         "benchmarks/original_amago.py)")
    ap.add_argument("--original-python", metavar="PY", default=None,
                    help="the interpreter that imports --original (its own venv); default: this one")
    ap.add_argument("--original-eager", action="store_true",
                    help="run the original with TORCHDYNAMO_DISABLE=1 (without its torch.compile decorators)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.bf16 = autocast_dtype(args.mixed_precision, torch.device(args.device)) is torch.bfloat16
    if args.long:
        return run_long(args)
    if args.original:
        return run_vs_original(args)
    device = torch.device(args.device)
    copy_options = dict(target_encoders=args.target_encoders)
    if args.variable:
        for res in bench_variable((args.seq_lens or [256])[0], args.batch, device, args.mean_trial_len,
                                  min_time=3.0 if args.quick else 8.0, repeats=args.repeats, bf16=args.bf16,
                                  loss_options=copy_options):
            print(json.dumps(res), flush=True)
        return
    seq_lens = args.seq_lens or ([128] if args.quick else [128, 512])
    compiles = args.compile or args.compile_loss != "no" or args.compile_step
    min_time = args.min_time or (3.0 if args.quick else 8.0)
    loss_options = dict(copy_options, n_step=args.n_step, cql_coeff=args.cql_coeff)
    if args.vs_eager:
        if not compiles or args.cuda_graph:
            raise SystemExit("--vs-eager compares a compiled setting with eager: add --compile-loss MODE, --compile "
                             "or --compile-step (not --cuda-graph)")
        for T in seq_lens:
            for res in bench_vs_eager(T, args.batch, device, min_time, args.min_updates,
                                      args.warmup if args.warmup is not None else 3, args.repeats,
                                      compile_=args.compile, bf16=args.bf16, critic=args.critic,
                                      pack_windows=args.pack_windows, loss_options=loss_options,
                                      compile_loss=args.compile_loss, compile_step=args.compile_step):
                print(json.dumps(res), flush=True)
        return
    for T in seq_lens:
        try:
            res = bench(T, args.batch, 128, 2, 8, device, args.compile, min_time=min_time,
                        min_updates=args.min_updates,
                        warmup=args.warmup if args.warmup is not None else (3 if compiles or args.cuda_graph else 2),
                        bf16=args.bf16, repeats=args.repeats, critic=args.critic, pack_windows=args.pack_windows,
                        loss_options=loss_options, compile_loss=args.compile_loss, cuda_graph=args.cuda_graph,
                        compile_step=args.compile_step)
        except RuntimeError as e:  # e.g. a module that is not autocast-safe under --bf16
            res = {"encoder": "transformer", "seq_len": T, "batch": args.batch, "error": str(e).splitlines()[0]}
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
