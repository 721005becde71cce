"""`--cuda_graph`: the whole learner update captured as two CUDA graphs, each replayed with one launch.

On a GPU at the example sizes the eager update is bound by kernel launches (docs/scaling.md: ~830 kernels, 19 ms of
CPU for 3.8 ms of GPU work at T = 128). :class:`GraphedUpdate` captures the update in two graphs over static buffers:

1. ``forward_backward``: the loss forward (under autocast if asked), the total loss, its backward and the global
   gradient norm, reading the batch from a static TensorDict that every update copies the sampled batch into;
2. ``step``: gradient clipping with that norm, the optimizer step and the target-network update.

Between the two the host reads two flags in one transfer (loss finite, gradient norm finite), so an update with
non-finite values is skipped as in eager mode (:meth:`GraphedUpdate.guarded_update`, run/guards.py). The learning
rate lives in a device tensor that the LR schedule fills in place (a ``capturable`` optimizer).

The first ``warmup`` completed updates run eagerly (on a side stream, as capture requires; they also create the
optimizer's state); the update after them captures both graphs and replays them. Off CUDA (``capture=False``) every
update runs eagerly through the same static buffers (the CPU tests' path).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from tensordict import TensorDictBase


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Put the optimizer in the form a captured step needs: ``capturable`` groups whose learning rate is a tensor on
    ``device`` (an LR scheduler then fills it in place) and whose ``step`` counters live on ``device``."""
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
    """`--cuda_graph` combinations that cannot be captured, each named (checked before any work)."""
    if not cfg.cuda_graph:
        return
    if device.type != "cuda":
        raise ValueError(f"--cuda_graph captures CUDA graphs: it needs --device cuda (got --device {cfg.device})")
    if cfg.trim_windows or packs:
        raise ValueError("--cuda_graph replays one batch shape for every update: add --no-trim_windows"
                         + (" and --pack_windows cpu (or never)" if packs else "")
                         + " (batches of max_seq_len steps, one window per row)")
    if cfg.compile_loss != "no":
        raise ValueError(f"--cuda_graph and --compile_loss {cfg.compile_loss} both capture the update: use one "
                         f"(--cuda_graph also captures the optimizer step)")
    if world_size > 1:
        raise ValueError("--cuda_graph under torchrun is not supported (the gradient all-reduce of DDP runs "
                         "outside the captured update): drop --cuda_graph or run one process")


class GraphedUpdate:
    """One learner update in two parts, eager for the first ``warmup`` completed steps, then CUDA-graph replays.

    ``loss_forward(batch) -> TensorDict`` and ``total_loss(out) -> scalar`` are the trainer's; ``params`` are the
    trained parameters (their ``.grad`` become static buffers once captured); ``target_updater`` is a TorchRL
    ``TargetNetUpdater`` or None. Call ``forward_backward(batch)``, then ``finite()``, then ``step()`` if both flags
    are true (else skip the update: the next ``forward_backward`` overwrites the gradients).
    """

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

    # ------------------------------------------------------------------ the two parts
    def _forward_backward(self) -> None:
        ctx = (torch.autocast(self.device.type, dtype=self.autocast, cache_enabled=False)
               if self.autocast is not None else contextlib.nullcontext())
        with ctx:
            out = self.loss_forward(self.static_batch)
        total = self.total_loss(out)
        total.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        gnorm = torch.nn.utils.get_total_norm(grads)
        # detached: a loss output that kept the autograd graph alive would keep the warm-up's AccumulateGrad nodes
        # (created on the side stream) alive into the capture, which PyTorch warns about
        self.out, self.total, self.gnorm = out.detach(), total.detach(), gnorm
        self.flags = torch.stack([torch.isfinite(self.total).all(), torch.isfinite(gnorm)])

    def _step(self) -> None:
        torch.nn.utils.clip_grads_with_norm_(self.params, self.grad_clip, self.gnorm)
        self.optimizer.step()
        if self.target_updater is not None:
            self.target_updater.step()

    def _on_side_stream(self):
        if self.side is None:
            return contextlib.nullcontext()
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        return torch.cuda.stream(self.side)

    def _join_side_stream(self) -> None:
        if self.side is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.side)

    # ------------------------------------------------------------------ API
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
        if self.captured:
            self.fwd_graph.replay()
        elif self.capture and self.steps >= self.warmup:
            self._capture_forward_backward()
            self.fwd_graph.replay()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            with self._on_side_stream():
                self._forward_backward()
            self._join_side_stream()
        return self.out.clone(), self.total.clone(), self.gnorm.clone()

    def finite(self) -> tuple[bool, bool]:
        """(loss finite, gradient norm finite) of the last ``forward_backward``: one host read."""
        loss_ok, grads_ok = self.flags.tolist()
        return bool(loss_ok), bool(grads_ok)

    def step(self) -> None:
        """Clip, optimizer step, target update (captured at the first step after the forward graph)."""
        if self.step_graph is not None:
            self.step_graph.replay()
        elif self.captured:
            self._capture_step()
            self.step_graph.replay()
        else:
            with self._on_side_stream():
                self._step()
            self._join_side_stream()
        self.steps += 1

    def guarded_update(self, batch: TensorDictBase, guard, named_params, step: int):
        """``forward_backward``, the finite checks of ``guard`` (a ``FiniteGuard``: only on a flag that is false),
        then ``step``. Returns (outputs, gradient norm), or None for an update skipped for non-finite values."""
        out, total, gnorm = self.forward_backward(batch)
        loss_ok, grads_ok = self.finite()
        if not loss_ok and not guard.loss_ok(total, out, step):
            return None
        if not grads_ok and not guard.grads_ok(named_params, gnorm, step):
            return None
        guard.ok()
        self.step()
        return out, gnorm

    # ------------------------------------------------------------------ capture
    def _capture_forward_backward(self) -> None:
        torch.cuda.synchronize(self.device)
        self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the static gradients
        self.fwd_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.fwd_graph, capture_error_mode="thread_local"):  # other threads (async weight
            # pushes) may use CUDA meanwhile
            self._forward_backward()

    def _capture_step(self) -> None:
        torch.cuda.synchronize(self.device)
        self.step_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.step_graph, pool=self.fwd_graph.pool(), capture_error_mode="thread_local"):
            self._step()
