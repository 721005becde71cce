"""Time the original AMAGO (UT-Austin-RPL/amago) beside this package, for `learner_update.py --original PATH`.

The original is never a dependency and none of its code is in this repository: PATH is a checkout (or a rebuilt copy)
of the original that holds `amago/agent.py`, and PYTHON (`--original-python`, default: this interpreter) an
interpreter that can import it (its own venv: torch, gin-config, einops, gymnasium, termcolor). The original runs in
a worker subprocess of that interpreter, so the two never share an import path; the benchmark asks the worker for
timing windows between its own, so both are timed in the same minutes of the same machine.

Worker protocol (one JSON object per line): the parent writes {"cmd": "warmup", "n": N} or
{"cmd": "time", "min_time": S, "min_updates": N} and reads {"updates": n, "seconds": s, "cpu_s": c}; {"cmd": "quit"}
ends it. The worker's first line is {"ready": true, "versions": {...}} or {"error": "..."}.

One update of the original = what its `Experiment.train_step` does with one batch: `Agent.forward(batch,
log_step=False)` (one backbone pass over T+1 steps; with `--bf16` under bf16 autocast, as its
`mixed_precision="bf16"` casts the forward through accelerate), backward, `clip_grad_norm_` (1.0, over
all the agent's parameters), `soft_sync_targets()`, AdamW step (lr 1e-4, weight decay 1e-3), warm-up LR schedule
step. Its networks: `FFTstepEncoder` defaults (512/512 -> 256), `TformerTrajEncoder(d_model, n_heads, d_ff=4 *
d_model, n_layers, attention_type=VanillaAttention)` (FlashAttention needs flash-attn and a GPU), `Actor` and
`NCritics` defaults (256 hidden, 4 critics), 7 gammas; its own `torch.compile` decorators stay as they are
(`--original-eager` sets TORCHDYNAMO_DISABLE=1 in the worker to run it eagerly).

For `encoder_step.py --original` the worker (`--acting`) times the original's acting step instead: `Agent.get_actions`
under `no_grad` in eval mode (as its `Experiment.interact`) for N envs, one step each, with the Transformer's KV cache
(`TformerHiddenState`, VanillaAttention) filled to the given length: the same widths as encoder_step.py's policy
(timestep encoder 128/128, d_model 128, 2 layers, 8 heads, d_ff 512, actor 128 hidden, 7 gammas, 4 actions). The
command {"cmd": "step", "cache_len": L, "t0": T, "min_time": S, "min_iters": N} answers {"ms_per_step": median}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def check_original_path(path: str | os.PathLike, flag: str = "--original") -> Path:
    """The checkout root of the original (the folder holding `amago/agent.py`), or a ValueError naming `flag`."""
    root = Path(path).expanduser().resolve()
    if not (root / "amago" / "agent.py").is_file():
        raise ValueError(f"{flag} {path}: no amago/agent.py under {root}; pass the folder of a checkout of the "
                         "original AMAGO (github.com/UT-Austin-RPL/amago), e.g. --original ~/src/amago")
    return root


class OriginalWorker:
    """The original's learner in a subprocess of `python`, timed on request."""

    def __init__(self, path: str, seq_len: int, batch: int, threads: int | None, python: str | None = None,
                 d_model: int = 128, layers: int = 2, heads: int = 8, eager: bool = False, acting: bool = False,
                 bf16: bool = False):
        root = check_original_path(path)
        env = dict(os.environ)
        if eager:
            env["TORCHDYNAMO_DISABLE"] = "1"
        cmd = [python or sys.executable, os.path.abspath(__file__), "--worker", "--path", str(root), "--seq-len",
               str(seq_len), "--batch", str(batch), "--d-model", str(d_model), "--layers", str(layers), "--heads",
               str(heads)] + (["--threads", str(threads)] if threads else [])
        cmd += [flag for flag, on in (("--acting", acting), ("--bf16", bf16)) if on]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        hello = self._read()
        if "error" in hello:
            self.close()
            raise RuntimeError(f"--original {path}: the original failed to load: {hello['error']}")
        self.versions = hello.get("versions", {})

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the original's worker exited (code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def _ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def warmup(self, n: int) -> dict:
        return self._ask(cmd="warmup", n=n)

    def time(self, min_time: float, min_updates: int) -> dict:
        return self._ask(cmd="time", min_time=min_time, min_updates=min_updates)

    def step(self, cache_len: int, t0: int, min_time: float, min_iters: int = 10) -> dict:
        return self._ask(cmd="step", cache_len=cache_len, t0=t0, min_time=min_time, min_iters=min_iters)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()


# ---------------------------------------------------------------- worker side (runs in the original's interpreter)

def _build_original(T: int, B: int, d_model: int, layers: int, heads: int, obs_dim: int = 10, n_actions: int = 4,
                    bf16: bool = False):
    """The original's Agent at the comparison point, its optimizer and schedule, and one padded batch; `bf16`: the
    forward under bf16 autocast (its Experiment's `mixed_precision="bf16"`)."""
    from functools import partial

    from amago.agent import Agent  # first: a broken checkout fails on the module the option is about

    import gymnasium as gym
    import numpy as np
    import torch
    from amago import utils as amago_utils
    from amago.loading import MAGIC_PAD_VAL, Batch
    from amago.nets.traj_encoders import TformerTrajEncoder
    from amago.nets.transformer import VanillaAttention
    from amago.nets.tstep_encoders import FFTstepEncoder

    torch.manual_seed(0)
    obs_space = gym.spaces.Dict({"observation": gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)})
    rl2_space = gym.spaces.Box(-np.inf, np.inf, (1 + n_actions,), np.float32)
    traj = partial(TformerTrajEncoder, d_model=d_model, n_heads=heads, d_ff=4 * d_model, n_layers=layers,
                   attention_type=VanillaAttention)
    agent = Agent(obs_space=obs_space, rl2_space=rl2_space, action_space=gym.spaces.Discrete(n_actions),
                  max_seq_len=T, tstep_encoder_type=FFTstepEncoder, traj_encoder_type=traj)
    agent.train()
    # SigmaReparam's u/v buffers start as rows of an SVD factor (non-unit stride) and become contiguous after the
    # first training forward; torch 2.13's compiled graphs then fail a stride assertion on the second call. Making
    # the buffers contiguous once changes no value (it is a harness-side fix, the original's code is untouched).
    for buf in agent.buffers():
        buf.data = buf.data.contiguous()
    opt = torch.optim.AdamW(agent.trainable_params, lr=1e-4, weight_decay=1e-3)
    if hasattr(amago_utils, "get_constant_schedule_with_warmup"):
        sched = amago_utils.get_constant_schedule_with_warmup(opt, num_warmup_steps=500)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 500))
    L = T + 1  # T + 1 observations, T actions (as the original's RLData.random_slice)
    acts = torch.nn.functional.one_hot(torch.randint(0, n_actions, (B, T)), n_actions).float()
    prev = torch.cat((torch.zeros(B, 1, n_actions), acts), 1)
    rews = torch.randn(B, T, 1)
    rl2s = torch.cat((torch.cat((torch.zeros(B, 1, 1), rews), 1), prev), -1)
    fields = dict(obs={"observation": torch.randn(B, L, obs_dim)}, rl2s=rl2s, rews=rews,
                  dones=torch.rand(B, T, 1) < 0.01, actions=acts,
                  time_idxs=torch.arange(L).view(1, L, 1).expand(B, L, 1).clone())
    pad_from = T - T // 8  # the same right padding as learner_update.make_batch: a quarter of the rows
    for k in ("rl2s", "time_idxs"):
        fields[k][: B // 4, pad_from + 1:] = MAGIC_PAD_VAL
    fields["obs"]["observation"][: B // 4, pad_from + 1:] = MAGIC_PAD_VAL
    for k in ("rews", "actions"):
        fields[k][: B // 4, pad_from:] = MAGIC_PAD_VAL
    fields["dones"][: B // 4, pad_from:] = True
    names = getattr(Batch, "__dataclass_fields__", {})
    batch = Batch(**{k: v for k, v in fields.items() if k in names}, **({"goals": None} if "goals" in names else {}))

    def update():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = agent(batch, log_step=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 1.0)
        agent.soft_sync_targets()
        opt.step()
        sched.step()

    return update


def _build_original_actor(cache_len: int, n_envs: int, d_model: int, layers: int, heads: int, obs_dim: int = 16,
                          n_actions: int = 4):
    """A step function: the original's get_actions for `n_envs` envs at a KV cache kept full at `cache_len`."""
    import statistics
    from functools import partial

    import gin
    import gymnasium as gym
    import numpy as np
    import torch
    from amago.agent import Agent
    from amago.nets.traj_encoders import TformerTrajEncoder
    from amago.nets.transformer import VanillaAttention
    from amago.nets.tstep_encoders import FFTstepEncoder

    torch.manual_seed(0)
    gin.bind_parameter("Actor.d_hidden", 128)  # the actor width of encoder_step.py's policy (the original: gin)
    obs_space = gym.spaces.Dict({"observation": gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)})
    rl2_space = gym.spaces.Box(-np.inf, np.inf, (1 + n_actions,), np.float32)
    agent = Agent(obs_space=obs_space, rl2_space=rl2_space, action_space=gym.spaces.Discrete(n_actions),
                  max_seq_len=cache_len, tstep_encoder_type=partial(FFTstepEncoder, d_hidden=128, d_output=128),
                  traj_encoder_type=partial(TformerTrajEncoder, d_model=d_model, n_heads=heads, d_ff=4 * d_model,
                                            n_layers=layers, attention_type=VanillaAttention))
    agent.eval()
    hidden = agent.traj_encoder.init_hidden_state(n_envs, torch.device("cpu"))
    hidden.key_cache.data.normal_()
    hidden.val_cache.data.normal_()
    hidden.seq_lens.fill_(cache_len - 1)  # full: each step attends over cache_len tokens, then the cache rolls

    def inputs(t):
        return ({"observation": torch.randn(n_envs, 1, obs_dim)}, torch.zeros(n_envs, 1, 1 + n_actions),
                torch.full((n_envs, 1, 1), t, dtype=torch.long))

    def timed(t0: int, min_time: float, min_iters: int) -> float:
        batches = [inputs(t0 + i) for i in range(8)]
        with torch.no_grad():
            for i in range(5):  # warm-up (the original's torch.compile decorators compile here)
                agent.get_actions(*batches[i % 8], hidden_state=hidden)
            times, start, i = [], time.perf_counter(), 0
            while i < min_iters or time.perf_counter() - start < min_time:
                s = time.perf_counter()
                agent.get_actions(*batches[i % 8], hidden_state=hidden)
                times.append(time.perf_counter() - s)
                i += 1
                if i >= 2000:
                    break
        return 1e3 * statistics.median(times)

    return timed


def _worker(args) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    out = sys.stdout
    sys.stdout = sys.stderr  # keep the protocol channel clean of the original's prints
    try:
        sys.path.insert(0, args.path)
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        update = None if args.acting else _build_original(args.seq_len, args.batch, args.d_model, args.layers,
                                                          args.heads, bf16=args.bf16)
        actors = {}
        import amago

        versions = {"amago": getattr(amago, "__version__", None), "torch": torch.__version__, "bf16": args.bf16,
                    "python": sys.version.split()[0], "threads": torch.get_num_threads(),
                    "dynamo_disabled": os.environ.get("TORCHDYNAMO_DISABLE") == "1"}
    except Exception as e:  # reported to the parent, which names --original
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), file=out, flush=True)
        return
    print(json.dumps({"ready": True, "versions": versions}), file=out, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "step":
            L = cmd["cache_len"]
            if L not in actors:
                actors[L] = _build_original_actor(L, args.batch, args.d_model, args.layers, args.heads)
            ms = actors[L](cmd["t0"], cmd["min_time"], cmd["min_iters"])
            print(json.dumps({"ms_per_step": ms}), file=out, flush=True)
            continue
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        if cmd["cmd"] == "warmup":
            for _ in range(cmd["n"]):
                update()
                n += 1
        else:
            while n < cmd["min_updates"] or time.perf_counter() - t0 < cmd["min_time"]:
                update()
                n += 1
        print(json.dumps({"updates": n, "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}),
              file=out, flush=True)


def main():
    ap = argparse.ArgumentParser(description="worker for learner_update.py --original (not run by hand)")
    ap.add_argument("--worker", action="store_true", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--bf16", action="store_true", help="the learner's forward under bf16 autocast")
    ap.add_argument("--acting", action="store_true", help="time get_actions steps (encoder_step.py) instead; "
                    "--batch is then the number of envs")
    _worker(ap.parse_args())


if __name__ == "__main__":
    main()
