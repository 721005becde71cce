"""The learner under `torchrun` (docs/scaling.md): process group, DDP, per-rank seeds; no-op without it."""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import json
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .device import device_from_flag

SEED_STRIDE = 7919  # rank r seeds its envs, sampling and exploration with seed + r * SEED_STRIDE


class DistributedError(RuntimeError):
    """Ranks disagree (configs, checkpoints) or a rank stopped responding."""


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class DistContext:
    """Where this process stands in a data-parallel learner (a single process is rank 0 of 1)."""

    def __init__(self, device: torch.device, rank: int = 0, world_size: int = 1, owns_group: bool = False,
                 timeout_s: float | None = None):
        self.device, self.rank, self.world_size = device, rank, world_size
        self.owns_group, self.timeout_s = owns_group, timeout_s
        self.enabled, self.is_main, self.seed_offset = world_size > 1, rank == 0, rank * SEED_STRIDE
        self._comm_device = device if world_size > 1 and dist.get_backend() == "nccl" else torch.device("cpu")

    def wrap(self, loss: nn.Module) -> nn.Module:
        """DDP over `loss` with its batch statistics all-reduced, or `loss` itself in a single process."""
        if not self.enabled:
            return loss
        for m in loss.modules():  # the modules that update running statistics from the batch
            if hasattr(m, "moment_reducer"):
                m.moment_reducer = _all_reduce_sum
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers stay equal after DDP's first broadcast: no broadcast at every forward
        names = inspect.signature(DistributedDataParallel.__init__).parameters
        no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in names else {"broadcast_buffers": False}
        return DistributedDataParallel(loss, device_ids=ids, **no_sync)

    def reseed(self, seed: int, step: int = 0) -> None:
        """Give ranks > 0 their own torch / numpy / python random streams, moved on by `step` (after a resume)."""
        if self.rank == 0:
            return
        s = seed + self.seed_offset + step
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)

    def _gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.to(self._comm_device)
        out = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(out, x)
        return [o.cpu() for o in out]

    def all_gather_int(self, value: int) -> list[int]:
        return [int(t) for t in self._gather(torch.tensor([int(value)]))] if self.enabled else [int(value)]

    def all_true(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on all of them."""
        return all(self.all_gather_int(int(bool(flag))))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def check_same_config(self, config: dict) -> None:
        """Raise DistributedError on every rank if the ranks have different configs."""
        if not self.enabled:
            return
        text = json.dumps(config, sort_keys=True, default=str)
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")
        if len(set(self.all_gather_int(digest))) == 1:
            return
        data = torch.tensor(list(text.encode()), dtype=torch.uint8)
        padded = torch.zeros(max(self.all_gather_int(data.numel())), dtype=torch.uint8)
        padded[: data.numel()] = data
        first, *others = [json.loads(bytes(t.tolist()).rstrip(b"\0").decode()) for t in self._gather(padded)]
        diffs = [f"rank {r} --{k}={c.get(k)!r} vs rank 0 --{k}={first.get(k)!r}" for r, c in enumerate(others, start=1)
                 for k in sorted(set(c) | set(first)) if c.get(k) != first.get(k)]
        raise DistributedError("torchrun ranks were started with different configs (every rank must get the same "
                               "flags): " + "; ".join(diffs[:10]))

    def check_same_counters(self, found: bool, grad_steps: int, path: str) -> None:
        """After resume: every rank must have loaded the same checkpoint."""
        seen = self.all_gather_int(grad_steps if found else -1)
        if len(set(seen)) > 1:
            raise DistributedError(f"ranks resumed from different checkpoints ({path}: grad_steps per rank {seen}, "
                                   f"-1 = not found); every rank must see the same --buffer_dir (a shared "
                                   f"filesystem on multi-node runs)")

    def rank_path(self, path: str, rank: int | None = None) -> str:
        """Per-rank folder: `path` for rank 0, `path_rank<r>` for the others."""
        r = self.rank if rank is None else rank
        return path if r == 0 else f"{path}_rank{r}"

    @contextlib.contextmanager
    def guard(self, last_checkpoint: str):
        """Turn a collective that failed because another rank died or hung into a DistributedError."""
        try:
            yield
        except RuntimeError as e:
            if not self.enabled or isinstance(e, DistributedError) or not _is_comm_error(e):
                raise
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: another rank stopped responding (it died, or hung past "
                f"--timeout_s={self.timeout_s}); stopping. The last checkpoint is {last_checkpoint} "
                f"(resume with the same command). Cause: {str(e).splitlines()[0][:300]}") from e

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _is_comm_error(e: BaseException) -> bool:
    return isinstance(e, getattr(dist, "DistError", ())) or any(s in str(e).lower() for s in (
        "gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "broken pipe",
        "process group"))


def setup_distributed(device: str, timeout_s: float) -> DistContext:
    """Check `--device`, join torchrun's process group, pick this rank's device (`cuda:<LOCAL_RANK>`)."""
    dev = device_from_flag(device)
    if not timeout_s > 0:
        raise ValueError(f"--timeout_s must be > 0, got {timeout_s}")
    owns = False
    if not dist.is_initialized():
        try:  # WORLD_SIZE set by torchrun
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError as e:
            raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from e
        if world_size <= 1:
            return DistContext(dev)
        if dev.type == "mps":
            raise ValueError("--device mps: torchrun with more than one process supports cpu (gloo) and cuda (nccl)")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if dev.index is None else dev.index)
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    elif dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return DistContext(dev, dist.get_rank(), dist.get_world_size(), owns_group=owns, timeout_s=timeout_s)


def start_process(cfg) -> DistContext:
    """A trainer's process: `setup_distributed`, the same config on every rank, the seed and torch's threads."""
    dist = setup_distributed(cfg.device, cfg.timeout_s)
    dist.check_same_config(cfg.to_dict())
    torch.manual_seed(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    return dist
