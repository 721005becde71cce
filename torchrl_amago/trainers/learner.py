"""The learner: one gradient step of a loss (sample, forward, backward, clip, optimizer, target update, schedules),
with non-finite updates skipped and counted; its state is a plain dict."""
from __future__ import annotations

import time
from typing import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from .logging import add_scalars
from .run.guards import FiniteGuard, skipped_update
from .scale.device import autocast
from .scale.graphed_update import GraphedUpdate
from .schedules import run_cql_factor, run_lr_factor, run_updates


#: Flags that shape the schedules: when one changes on resume, the schedules are planned over the new run.
SCHEDULE_FLAGS = ("lr_warmup_steps", "lr_decay", "cql_ramp")


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def total_loss(out: TensorDictBase) -> torch.Tensor:
    """Sum of every differentiable `loss_*` entry (TorchRL's convention)."""
    terms = [v for k, v in out.items() if isinstance(k, str) and k.startswith("loss_")
             and isinstance(v, torch.Tensor) and v.requires_grad]
    if not terms:
        raise ValueError(f"the loss returned no differentiable 'loss_*' entry (keys: {sorted(out.keys())})")
    return sum(terms[1:], terms[0])


class Learner:
    """Owns the update of `loss`: `update()` draws a batch from `sample`, steps `optimizer`, `target_updater` and the
    schedules of `cfg` (a `TrainConfig`: clip, learning-rate warm-up and decay, `--cql_ramp`); `learn(n)` makes `n`
    updates. `loss_forward` is the loss as the learner calls it (DDP, compiled); `all_true(flag)` agrees a flag across
    torchrun ranks; `fit_threads()` runs before backward and before the step; `on_graph_replay()` after a
    `--cuda_graph` replay (which writes the weights without bumping their version counters)."""

    def __init__(self, loss: LossModule, optimizer: torch.optim.Optimizer, sample: Callable[[], TensorDictBase], cfg,
                 *, target_updater=None, loss_forward: Callable | None = None,
                 device: torch.device = torch.device("cpu"), precision: torch.dtype | None = None,
                 all_true: Callable[[bool], bool] = bool, fit_threads: Callable[[], None] = lambda: None,
                 on_graph_replay: Callable[[], None] = lambda: None):
        self.loss, self.optimizer, self.sample, self.cfg = loss, optimizer, sample, cfg
        self.target_updater = target_updater
        self.loss_forward = loss if loss_forward is None else loss_forward
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.device, self.precision = device, precision
        self.all_true, self.fit_threads, self.on_graph_replay = all_true, fit_threads, on_graph_replay
        self.guard = FiniteGuard()
        self.graphed: GraphedUpdate | None = None  # --cuda_graph: built at the first update
        self.grad_steps = 0
        self.planned_updates = run_updates(cfg)  # the schedules' length; a resumed run keeps its own
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, run_lr_factor(cfg, self.planned_updates))
        self.cql_factor = run_cql_factor(cfg, loss, self.planned_updates)

    def learn(self, n: int) -> dict:
        """`n` updates; returns their mean outputs as `train-update/*` metrics."""
        t0, sums = time.time(), {}
        for _ in range(n):
            add_scalars(sums, self.update())
        return self.metrics(sums, n, time.time() - t0)

    def update(self) -> TensorDict:
        """One gradient step (loss, backward, clip, optimizer, target update, schedule); NaN/inf skips and counts it."""
        self.loss.train()
        if self.cql_factor is not None:  # in place: a captured graph reads it
            self.loss.cql_scale.fill_(self.cql_factor(self.grad_steps))
        batch = self.sample()
        if not self.all_true(self.guard.batch_ok(batch, self.grad_steps)):
            return skipped_update()
        if self.cfg.cuda_graph or self.graphed is not None:
            return self._graphed_update(batch)
        batch = batch.to(self.device)
        with autocast(self.device, self.precision):
            out = self.loss_forward(batch)
        total = total_loss(out)
        self.optimizer.zero_grad(set_to_none=True)
        if not self.all_true(self.guard.loss_ok(total, out, self.grad_steps)):
            return skipped_update()
        self.fit_threads()
        total.backward()
        gnorm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if not self.guard.grads_ok(self.loss.named_parameters(), gnorm, self.grad_steps):
            self.optimizer.zero_grad(set_to_none=True)
            return skipped_update()
        torch.nn.utils.clip_grads_with_norm_(self.params, self.cfg.grad_clip, gnorm)
        self.guard.ok()
        self.fit_threads()
        self.optimizer.step()
        if self.target_updater is not None:
            self.target_updater.step()
        return self._stepped(out.detach(), gnorm.detach())

    def _graphed_update(self, batch) -> TensorDict:
        if self.graphed is None:
            self.graphed = GraphedUpdate(self.loss_forward, total_loss, self.optimizer, self.params, self.cfg.grad_clip,
                                         self.target_updater, self.precision)
        done = self.graphed.guarded_update(batch, self.guard, self.loss.named_parameters(), self.grad_steps)
        if done is None:
            return skipped_update()
        self.on_graph_replay()  # replays write the weights without bumping version counters
        return self._stepped(*done)

    def _stepped(self, out: TensorDict, gnorm: torch.Tensor) -> TensorDict:
        self.scheduler.step()
        self.grad_steps += 1
        out.set("grad_norm", gnorm)
        out.set("nonfinite_skipped", torch.zeros(()))
        return out

    def metrics(self, sums: dict, n: int, seconds: float) -> dict:
        """The `train-update/*` record of `n` updates whose outputs add up to `sums`."""
        res = {f"train-update/{k}": v / n for k, v in sums.items()} if n else {}
        res["train-update/grad_steps_per_s"] = n / max(seconds, 1e-9)
        res["train-update/lr"] = float(self.scheduler.get_last_lr()[0])  # a tensor under --cuda_graph
        if self.cql_factor is not None:
            res["train-update/cql_scale"] = self.cql_factor(max(0, self.grad_steps - 1))
        return res

    def state_dict(self) -> dict:
        """The loss's, optimizer's and schedule's states, and the number of updates the schedules were planned over."""
        return {"loss": self.loss.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "schedule_updates": self.planned_updates}

    def load_state_dict(self, state: dict, grad_steps: int) -> None:
        """Restore :meth:`state_dict` (checked beforehand) at `grad_steps`. The config's learning rate and weight decay
        are written into the loaded optimizer. The schedules keep the length the run was planned with, unless a flag
        that shapes them changed (`SCHEDULE_FLAGS` against the state's ``config``): then they are planned over this
        config's run."""
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.grad_steps = int(grad_steps)
        stored = state.get("config") or {}
        if all(_norm(stored.get(k)) == _norm(getattr(self.cfg, k)) for k in SCHEDULE_FLAGS):
            self.planned_updates = int(state.get("schedule_updates", self.planned_updates))
        self.scheduler.lr_lambdas = [run_lr_factor(self.cfg, self.planned_updates) for _ in self.optimizer.param_groups]
        self.cql_factor = run_cql_factor(self.cfg, self.loss, self.planned_updates)
        apply_optimizer_settings(self.optimizer, self.scheduler, self.cfg.learning_rate, self.cfg.l2_coeff)


def apply_optimizer_settings(optimizer, scheduler, learning_rate: float, weight_decay: float) -> None:
    """Write the current learning rate and weight decay into a loaded optimizer and LambdaLR schedule."""
    scheduler.base_lrs = [learning_rate for _ in optimizer.param_groups]
    for group, lam in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = learning_rate
        group["weight_decay"] = weight_decay
        group["lr"] = learning_rate * lam(scheduler.last_epoch)  # a float: --cuda_graph makes a tensor later
        if "capturable" in group:  # eager from here on (capturable again with --cuda_graph)
            group["capturable"] = False
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
