"""Checkpoint files: model + optimizer + schedule + exploration + counters + RNG, with clear errors.

Loading never unpickles code: files are read with :func:`torchrl_amago.data.safe_files.load_tensors` (tensors,
numbers, strings, lists, tuples, dicts only, checked before anything is deserialised), so a crafted ``.pt`` in a
run directory raises ``CheckpointError`` naming the file instead of running. The replay buffer's table lives
inside the same file (``data/replay_persist.py``); its memmaps stay on disk next to it.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..data.replay_persist import fsync_dir
from ..data.safe_files import UnsafeFileError, load_tensors

FORMAT = "torchrl_amago.checkpoint.v1"
REQUIRED = ("format", "loss", "optimizer", "scheduler", "counters", "config")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or does not match the current run."""


def rng_state() -> dict:
    """RNG states as plain tensors / ints / tuples (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                       "gauss": gauss}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))


def fault_point(name: str) -> None:
    """Named step of a checkpoint write; tests replace it to inject a crash there (see test_reliability)."""


def save_checkpoint(path: str, payload: dict) -> None:
    """Atomic, durable write (tmp file + fsync + rename + directory fsync): a crash at any point leaves
    either the old file or the new one, never a truncated one."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        fault_point("checkpoint_tmp_written")
        f.flush()
        os.fsync(f.fileno())
    fault_point("checkpoint_tmp_synced")
    os.replace(tmp, path)
    fsync_dir(folder)
    fault_point("checkpoint_renamed")


def load_checkpoint(path: str, required: tuple[str, ...] = REQUIRED) -> dict:
    """Read a checkpoint (or another rank's replay file, with its own `required` entries) without unpickling code."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = load_tensors(path)
    except UnsafeFileError as e:  # a crafted, foreign or damaged file: refused before anything was unpickled
        raise CheckpointError(f"checkpoint {path} is corrupt or holds objects other than tensors and plain values; "
                              f"it was not loaded ({str(e).removeprefix(f'{path} ')})") from e
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torchrl_amago checkpoint (expected format {FORMAT!r})")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks entries {missing}")
    return ckpt


def with_new_target_copies(module: torch.nn.Module, state: dict) -> dict:
    """``state`` plus, for each target copy the module has and ``state`` lacks (a run branched with
    ``--target_backbone`` from a checkpoint made without it), the online weights it copies: entry
    ``target_backbone_params.<path>`` <- ``<path>``, as a fresh loss initialises its targets."""
    prefix = "target_backbone_params."
    missing = {k: k[len(prefix):] for k in module.state_dict() if k.startswith(prefix) and k not in state}
    if not missing or any(src not in state for src in missing.values()):
        return state
    return {**state, **{k: state[src] for k, src in missing.items()}}


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
