"""Checkpoint files: model + optimizer + schedule + exploration + counters + RNG, with clear errors.

The replay buffer is checkpointed next to the file with the buffer's own `dumps`/`loads` (memmaps on disk).
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile

import numpy as np
import torch

FORMAT = "torchrl_amago.checkpoint.v1"
REQUIRED = ("format", "loss", "optimizer", "scheduler", "counters", "config")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not match the current run."""


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str, payload: dict) -> None:
    """Atomic write (tmp file + rename) so a crash mid-write never leaves a truncated `latest`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchrl_amago checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks entries {missing}")
    return ckpt


def load_module_state(module: torch.nn.Module, state: dict, what: str, path: str) -> None:
    """load_state_dict with an error that names mismatched keys/shapes instead of a raw traceback."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        msg = [f"checkpoint {path} does not match the current {what} (was it made with another config?)"]
        if missing:
            msg.append(f"missing keys: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            msg.append(f"unexpected keys: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            msg.append("shape mismatches: " + "; ".join(shapes[:8]))
        raise CheckpointError("\n  ".join(msg))
    module.load_state_dict(state)
