"""Where the learner runs: `--device`, autocast, the loss forward (DDP, compiled), acting across devices."""
from __future__ import annotations

import contextlib

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from ...objectives.packing import packs_here
from .graphed_update import check_cuda_graph

PRECISION_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: `--mixed_precision`: "auto" (bf16 where the device computes it natively, else fp32) or an autocast dtype
PRECISIONS = ("auto", *PRECISION_DTYPES)
#: /proc/cpuinfo flags of the x86 units that compute bf16 natively (AVX-512 BF16, AMX)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: `--compile_loss`: "no" (eager) or a `torch.compile` mode
COMPILE_MODES = ("no", "default", "reduce-overhead", "max-autotune")


def device_from_flag(name: str) -> torch.device:
    """`--device` -> torch.device, or a ValueError naming the flag."""
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device ({e})") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}, "
                             f"built with CUDA {torch.version.cuda}, torch.cuda.is_available() is False); "
                             f"use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"--device {name}: only cpu, cuda[:i] and mps are supported")
    return dev


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags, from the first `flags` line of `path` (empty where there is none: not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CPU with AVX-512 BF16 or AMX, a GPU with bf16."""
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """`--mixed_precision` -> the autocast dtype on `device` (None: fp32), or a ValueError naming the flag;
    "auto" is bf16 where `device` computes it natively (`native_bf16`), else fp32."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"--mixed_precision {mixed_precision!r} is not one of {list(PRECISIONS)}")
    if mixed_precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    dtype = PRECISION_DTYPES[mixed_precision]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--mixed_precision bf16: the GPU {device} has no bf16 support; use fp16 or no")
    return dtype


def compile_loss(loss_forward, mode: str, *, trim_windows: bool, packs: bool):
    """`--compile_loss` -> `loss_forward`, compiled unless "no" (one batch shape: not trimmed, not `packs`)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"--compile_loss {mode!r} is not one of {list(COMPILE_MODES)}")
    if mode == "no":
        return loss_forward
    if trim_windows or packs:
        raise ValueError(f"--compile_loss {mode} needs one batch shape for every update: add --no-trim_windows "
                         f"(batches of max_seq_len steps, one window per row)"
                         + (" and AMAGOLoss(pack_windows='never')" if packs else ""))
    return torch.compile(loss_forward, mode=mode, dynamic=False)


def precision_name(dtype: torch.dtype | None) -> str:
    """The learner's precision as runs report it: "fp32", "bf16" or "fp16"."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` to `dtype` on `device`'s type, or no context when `dtype` is None (fp32)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def learner_forward(loss, cfg, dist):
    """The learner's loss forward: `dist.wrap(loss)`, compiled with `--compile_loss` (never packing then)."""
    if (cfg.compile_loss != "no" or cfg.cuda_graph) and hasattr(loss, "pack_windows"):
        loss.pack_windows = "never"
    packs = packs_here(getattr(loss, "pack_windows", "never"), torch.empty(0, device=dist.device))
    check_cuda_graph(cfg, dist.device, packs, dist.world_size)
    return compile_loss(dist.wrap(loss), cfg.compile_loss, trim_windows=cfg.trim_windows, packs=packs)


class OnDevice(TensorDictModuleBase):
    """Runs `module` on `device` for tensordicts elsewhere; its `out_keys` come back to the input's device."""

    def __init__(self, module: TensorDictModuleBase, device: torch.device):
        super().__init__()
        self.module, self.device = module, torch.device(device)
        self.in_keys = list(getattr(module, "in_keys", []))
        self.out_keys = list(getattr(module, "out_keys", []))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self.module(tensordict.to(self.device))
        return tensordict.update(out.to(tensordict.device) if tensordict.device is not None else out.cpu())


def on_device(module: TensorDictModuleBase, device: torch.device, env_device) -> TensorDictModuleBase:
    """`module` itself when the env's tensordicts are already on `device`, else `OnDevice(module, device)`."""
    if env_device is not None and torch.device(env_device) == torch.device(device):
        return module
    if env_device is None and torch.device(device).type == "cpu":
        return module
    return OnDevice(module, device)
