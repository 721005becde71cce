"""`--cuda_graph`: the learner update captured as two CUDA graphs over static buffers (docs/scaling.md)."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from tensordict import TensorDictBase


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make the optimizer capturable: learning rates and ``step`` counters as tensors on ``device``."""
    for group in optimizer.param_groups:
        if "capturable" not in group:
            raise ValueError(f"{type(optimizer).__name__} has no capturable mode; --cuda_graph needs an optimizer "
                             f"that has one (Adam, AdamW, SGD with foreach, ...)")
        group["capturable"] = True
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor) and step.device != device:
                optimizer.state[p]["step"] = step.to(device=device, dtype=torch.float32)


def check_cuda_graph(cfg, device: torch.device, packs: bool, world_size: int) -> None:
    """`--cuda_graph` combinations that cannot be captured, each named."""
    if not cfg.cuda_graph:
        return
    if device.type != "cuda":
        raise ValueError(f"--cuda_graph captures CUDA graphs: it needs --device cuda (got --device {cfg.device})")
    if cfg.trim_windows or packs:
        raise ValueError("--cuda_graph replays one batch shape for every update: add --no-trim_windows (batches of "
                         "max_seq_len steps, one window per row)" + (" and AMAGOLoss(pack_windows='never')" if packs
                                                                     else ""))
    if cfg.compile_loss != "no":
        raise ValueError(f"--cuda_graph and --compile_loss {cfg.compile_loss} both capture the update: use one "
                         f"(--cuda_graph also captures the optimizer step)")
    if world_size > 1:
        raise ValueError("--cuda_graph under torchrun is not supported (the gradient all-reduce of DDP runs "
                         "outside the captured update): drop --cuda_graph or run one process")


class GraphedUpdate:
    """One learner update as ``forward_backward(batch)``, ``finite()``, ``step()``: eager (on a side stream) for
    the first ``warmup`` steps, then captured and replayed (``capture=False``: always eager)."""

    def __init__(self, loss_forward: Callable, total_loss: Callable, optimizer: torch.optim.Optimizer, params: list,
                 grad_clip: float, target_updater=None, autocast: torch.dtype | None = None, warmup: int = 3,
                 capture: bool | None = None):
        self.device = params[0].device
        self.capture = self.device.type == "cuda" if capture is None else bool(capture)
        if self.capture and self.device.type != "cuda":
            raise ValueError(f"--cuda_graph captures CUDA graphs: the learner is on {self.device}; use --device cuda")
        if warmup < 1:
            raise ValueError(f"GraphedUpdate(warmup={warmup}): at least 1 eager update must create the optimizer state")
        self.loss_forward, self.total_loss = loss_forward, total_loss
        self.optimizer, self.params, self.grad_clip = optimizer, list(params), float(grad_clip)
        self.target_updater, self.autocast, self.warmup = target_updater, autocast, int(warmup)
        make_capturable(optimizer, self.device)
        self.steps = 0  # completed optimizer steps (eager or replayed)
        self.static_batch: TensorDictBase | None = None
        self.out = self.total = self.gnorm = self.flags = None
        self.fwd_graph = self.step_graph = None
        self.side = torch.cuda.Stream(self.device) if self.capture else None

    def _forward_backward(self) -> None:
        ctx = (torch.autocast(self.device.type, dtype=self.autocast, cache_enabled=False)
               if self.autocast is not None else contextlib.nullcontext())
        with ctx:
            out = self.loss_forward(self.static_batch)
        total = self.total_loss(out)
        total.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        gnorm = torch.nn.utils.get_total_norm(grads)
        # detached: no autograd graph of the warm-up may live into the capture
        self.out, self.total, self.gnorm = out.detach(), total.detach(), gnorm
        self.flags = torch.stack([torch.isfinite(self.total).all(), torch.isfinite(gnorm)])

    def _step(self) -> None:
        torch.nn.utils.clip_grads_with_norm_(self.params, self.grad_clip, self.gnorm)
        self.optimizer.step()
        if self.target_updater is not None:
            self.target_updater.step()

    @contextlib.contextmanager
    def _eager(self):
        """Run the block eagerly, on the side stream where a capture follows (as capture requires)."""
        if self.side is None:
            yield
            return
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(self.side)

    @property
    def captured(self) -> bool:
        return self.fwd_graph is not None

    def load_batch(self, batch: TensorDictBase) -> None:
        """Copy ``batch`` (any device) into the static buffers the captured forward reads."""
        if self.static_batch is None:
            self.static_batch = batch.to(self.device).clone()
            return
        if batch.batch_size != self.static_batch.batch_size:
            raise ValueError(f"--cuda_graph replays one batch shape: this batch is {list(batch.batch_size)}, the "
                             f"captured one {list(self.static_batch.batch_size)}; add --no-trim_windows (every batch "
                             f"max_seq_len steps)")
        self.static_batch.update_(batch, non_blocking=True)

    def forward_backward(self, batch: TensorDictBase) -> tuple[TensorDictBase, torch.Tensor, torch.Tensor]:
        """Loss outputs (a copy), total loss and gradient norm of ``batch``; the gradients are in ``p.grad``."""
        self.load_batch(batch)
        if not self.captured and self.capture and self.steps >= self.warmup:
            torch.cuda.synchronize(self.device)
            self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the static gradients
            self.fwd_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.fwd_graph, capture_error_mode="thread_local"):  # weight pushes may use CUDA
                self._forward_backward()
        if self.captured:
            self.fwd_graph.replay()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            with self._eager():
                self._forward_backward()
        return self.out.clone(), self.total.clone(), self.gnorm.clone()

    def finite(self) -> tuple[bool, bool]:
        """(loss finite, gradient norm finite) of the last ``forward_backward``: one host read."""
        loss_ok, grads_ok = self.flags.tolist()
        return bool(loss_ok), bool(grads_ok)

    def step(self) -> None:
        """Clip, optimizer step, target update (captured at the first step after the forward graph)."""
        if self.step_graph is None and self.captured:
            torch.cuda.synchronize(self.device)
            self.step_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.step_graph, pool=self.fwd_graph.pool(), capture_error_mode="thread_local"):
                self._step()
        if self.step_graph is not None:
            self.step_graph.replay()
        else:
            with self._eager():
                self._step()
        self.steps += 1

    def guarded_update(self, batch: TensorDictBase, guard, named_params, step: int):
        """``forward_backward``, ``guard``'s checks, ``step``; (outputs, gradient norm), or None if skipped."""
        out, total, gnorm = self.forward_backward(batch)
        loss_ok, grads_ok = self.finite()
        if not loss_ok and not guard.loss_ok(total, out, step):
            return None
        if not grads_ok and not guard.grads_ok(named_params, gnorm, step):
            return None
        guard.ok()
        self.step()
        return out, gnorm
