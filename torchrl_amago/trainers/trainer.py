"""The off-policy sequence trainer: collect -> extend replay -> K updates -> eval -> checkpoint, per epoch.

Built only from public pieces (Collector, the sequence replay, AMAGOLoss, AMAGOSoftUpdate, AMAGOPolicy), so a
TorchRL user can rebuild the same loop by hand (docs/torchrl_composability.md).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Callable

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import LossModule

from ..data import make_sequence_replay
from ..objectives import AMAGOSoftUpdate
from ..objectives.packing import packs_here
from .collection import (CollectorFeed, WithActionCounts, build_multiprocess_collector, build_remote_collector,
                         check_async_config, local_collector_workers, sync_exploration_step, target_replay_ratio)
from .best_eval import BEST_EVAL, FINAL_EVALS, BestEval, load_best_state, save_best
from .checkpoint import (CheckpointError, load_checkpoint, load_module_state, rng_state, save_checkpoint,
                         set_rng_state, with_new_target_copies)
from .guards import FiniteGuard, NonFiniteError, check_finite_state, guard_env, nonfinite_keys
from .run_checkpoint import (ReplayGenerations, check_resume, commit_rank_replays, remove_old_rank_files,
                             restore_rank_replay)
from .config import TrainConfig
from .device import autocast_dtype, compile_loss, on_device
from .distributed import SilentLogger, setup_distributed
from .graphed_update import GraphedUpdate, check_cuda_graph
from .factory import AgentModules, build_agent_modules, build_exploration, build_loss, build_policy
from .logging import RunLogger
from .schedules import run_cql_factor, run_lr_factor
from .resume_config import apply_optimizer_settings
from .threads import LearnerThreads
from .metrics import (TrialReturnsById, episode_metrics, finished_trial_returns, per_task_return_metrics,
                      return_metrics)

EnvFactory = Callable[[int], EnvBase]  # num_envs -> env with batch_size [num_envs]
EVAL_STREAM = 10_000  # the eval envs are seeded with seed + this


class AMAGOTrainer:
    """Epoch loop of the original `Experiment.learn`, over TorchRL pieces.

    Args:
        config: the run's `TrainConfig`.
        make_train_env / make_eval_env: `num_envs -> batched env` (the standard AMAGO transform stack applied).
            `make_eval_env=None` needs `config.eval_interval == 0` (a ValueError names both otherwise); `finish()` then
            reports `eval_return` NaN.
        modules: prebuilt `AgentModules` (default: built from the config and the env specs); the acting policy
            is built from them.
        loss: any TorchRL `LossModule` to train instead of the configured `AMAGOLoss` (e.g. a subclass with another
            actor objective; docs/swapping.md). It should hold `modules`' networks, which the policy acts with.
            The update sums every differentiable `loss_*` entry of its output; the optimizer takes its trainable
            parameters and `AMAGOSoftUpdate` runs if it has target parameters. Subclasses may instead override
            `build_loss`, `build_policy`, `build_optimizer` or `build_target_updater`.
        timestep_encoder: only replace the default timestep encoder: a module, or a factory
            `(observation_spec, action_spec) -> module` built after torch is seeded (so `--seed` decides its weights).
        exploration: module rewriting `"action"` after the policy (default: from the config; None = off).
        trial_transform: whole-trial replay transform (e.g. hindsight relabeling).
        offline_data: optional list of trial TensorDicts loaded into a second (protected) replay buffer that is
            mixed with the online one at `offline_weight`.
        rollout_horizon: trial length, used by the bilevel exploration schedule.
        env_name: name used in the per-env eval metrics (`eval/return/<env_name>`).
        success_threshold: a trial with return >= this counts as a success (`eval/success`), e.g. 1 on T-Maze.
        task_names: names of a multi-task env's tasks, indexed by its `"task_id"` key: eval returns are then also
            logged per task (`eval/return/<task name>`).
    """

    def __init__(self, config: TrainConfig, make_train_env: EnvFactory, make_eval_env: EnvFactory | None = None, *,
                 modules: AgentModules | None = None, loss: LossModule | None = None, timestep_encoder=None,
                 exploration="config",
                 trial_transform=None, offline_data=None, offline_weight: float = 0.8,
                 rollout_horizon: int | None = None, env_name: str = "env",
                 success_threshold: float | None = None, task_names: list[str] | None = None):
        self.cfg = cfg = config
        if make_eval_env is None and cfg.eval_interval > 0:  # else every eval would log NaN, silently
            raise ValueError(f"AMAGOTrainer(make_eval_env=None) cannot evaluate every --eval_interval="
                             f"{cfg.eval_interval} epochs: pass make_eval_env (e.g. the training factory again: "
                             f"AMAGOTrainer(config, make_env, make_env)), or set eval_interval=0 (--eval_interval 0) "
                             f"to train without evaluation")
        # first: a bad --device fails before any work; under torchrun, join the group and compare configs
        self.dist = setup_distributed(cfg.device, cfg.timeout_s)
        self.dist.check_same_config(cfg.to_dict())
        check_trial_fits(cfg, rollout_horizon)
        torch.manual_seed(cfg.seed)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.env_name = env_name
        self.success_threshold = success_threshold
        self.task_names = list(task_names) if task_names else None
        self.run_dir = os.path.join(cfg.buffer_dir, cfg.run_name)
        self.ckpt_dir = os.path.join(self.run_dir, "ckpts")
        self.device = self.dist.device
        self.async_collect = cfg.collect != "sync"  # collector workers run beside the learner (collection.py)
        check_async_config(cfg, offline_only=cfg.start_collecting_at_epoch >= cfg.epochs,
                           world_size=self.dist.world_size)
        if cfg.count_heads:  # the heads read the counts
            make_train_env = WithActionCounts(make_train_env)
            make_eval_env = make_eval_env and WithActionCounts(make_eval_env)
        # async: the workers build their own envs; this one (1 env) only gives the specs
        self.train_env = guard_env(make_train_env(1 if self.async_collect else cfg.parallel_envs), "training env")
        self.train_env.set_seed(cfg.seed + self.dist.seed_offset)
        self.eval_env = (guard_env(make_eval_env(cfg.eval_envs), "eval env")
                         if make_eval_env is not None and self.dist.is_main else None)
        if self.eval_env is not None:
            self.eval_env.set_seed(cfg.seed + EVAL_STREAM)
        self.modules = modules or build_agent_modules(cfg, self.train_env.observation_spec, self.train_env.action_spec,
                                                      timestep_encoder=timestep_encoder)
        self.loss = (loss if loss is not None else self.build_loss()).to(self.device)
        # --cql_ramp: the conservative term's weight per update (None: constant)
        self.cql_factor = run_cql_factor(cfg, self.loss)
        if (cfg.compile_loss != "no" or cfg.cuda_graph) and hasattr(self.loss, "pack_windows"):
            self.loss.pack_windows = "never"  # a compiled or captured update needs one batch shape: a window per row
        packs = packs_here(getattr(self.loss, "pack_windows", "never"), torch.empty(0, device=self.device))
        check_cuda_graph(cfg, self.device, packs, self.dist.world_size)
        self.loss_forward = compile_loss(  # DDP under torchrun, else the loss itself; compiled if asked
            self.dist.wrap(self.loss), cfg.compile_loss, trim_windows=cfg.trim_windows, packs=packs)
        self.graphed: GraphedUpdate | None = None  # --cuda_graph: built at the first update (after a resume)
        self.dist.reseed(cfg.seed)  # ranks > 0: own streams for sampling, dropout, exploration
        self.policy = self.build_policy()
        primer = self._add_memory_primer()
        self.policy.deterministic = None if cfg.sample_actions_train else True
        self.exploration = (build_exploration(cfg, self.train_env.action_spec, rollout_horizon)
                            if exploration == "config" else exploration)
        actor = self.policy if self.exploration is None else TensorDictSequential(self.policy, self.exploration)
        # every weight and buffer where the learner is: TorchRL's Collector acts with a *copy* of a policy that has
        # any tensor elsewhere (here the policy's / exploration's own buffers), and the copy's weights share storage
        # but not version counters with the learner's, so its cached sigma-reparam weights stayed those of the first
        # step (on CUDA the trained policy was evaluated while a stale one collected the data)
        self.actor = actor.to(self.device)  # what acts in the training envs (async: pushed to the workers' copies)
        self.params = [p for p in self.loss.parameters() if p.requires_grad]
        self.optimizer = self.build_optimizer(self.params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, run_lr_factor(cfg))
        self.target_updater = self.build_target_updater()
        # The replay's memmaps live in a "generation" folder that a checkpoint names; resuming re-attaches that
        # folder in place (no copy). Other generations are deleted only once a new checkpoint is durable, and
        # never when a resume fails (trainers/run_checkpoint.py).
        self.buffer_root = self.dist.rank_path(os.path.join(self.run_dir, "buffer"))  # one replay per rank
        self.generations = ReplayGenerations(self.buffer_root)
        self.buffer_gen = self.generations.fresh()
        self.replay = make_sequence_replay(
            cfg.dset_max_size, cfg.max_seq_len, cfg.batch_size,
            scratch_dir=self.generations.storage_dir(self.buffer_gen),
            padded_sampling=cfg.padded_sampling, trial_transform=trial_transform,
            max_trial_len=cfg.traj_save_len, trim=cfg.trim_windows)
        self.generations.attach(self.replay, self.buffer_gen)
        self.guard = FiniteGuard()
        self.offline_replay = None
        self.sampler = self.replay
        if offline_data is not None:
            from ..data import MixedReplay, load_offline_trials

            offline_dir = self.dist.rank_path(os.path.join(self.run_dir, "offline_buffer"))
            shutil.rmtree(offline_dir, ignore_errors=True)  # rebuilt from `offline_data` at every start
            self.offline_replay = make_sequence_replay(
                max(cfg.dset_max_size, 1), cfg.max_seq_len, cfg.batch_size,
                scratch_dir=offline_dir,
                padded_sampling=cfg.padded_sampling, trial_transform=trial_transform, max_trial_len=cfg.traj_save_len,
                trim=cfg.trim_windows)
            self.offline_report: dict = {}  # trials dropped for NaN/inf (--nonfinite_data drop), by key
            load_offline_trials(self.offline_replay, offline_data, nonfinite=cfg.nonfinite_data,
                                report=self.offline_report)
            self.sampler = MixedReplay([self.offline_replay, self.replay], [offline_weight, 1 - offline_weight],
                                       batch_size=cfg.batch_size)
        # the policy runs on `device` (its modules are the loss's); envs and stored data stay where the env is.
        # An env without a device (a batch of gymnasium envs) steps on the CPU: naming it lets the collector bring
        # the policy's outputs back there (else a partial reset mixes CUDA and CPU tensors)
        self.env_device = self.train_env.device or torch.device("cpu")
        if self.async_collect:
            self.collector = self.build_async_collector(make_train_env, actor, primer)
            # the learner's threads leave a core to each worker of this machine while it acts (threads.py)
            self.learner_threads = LearnerThreads(torch.get_num_threads(), local_collector_workers(cfg))
        else:
            self.learner_threads = None
            self.collector = Collector(self.train_env, actor,
                                       frames_per_batch=cfg.parallel_envs * cfg.timesteps_per_epoch,
                                       total_frames=-1, exploration_type=ExplorationType.RANDOM,
                                       policy_device=self.device, env_device=self.env_device,
                                       storing_device="cpu")
        self._collector_iter = None
        self.feed: CollectorFeed | None = None  # async: started at the first epoch (after a resume)
        self._push = None  # async: the weight push in flight (push_weights(wait=False))
        self.replay_ratio = target_replay_ratio(cfg)
        self.epoch = 0
        self.env_steps = 0
        self.grad_steps = 0
        self._running_returns = None
        self._trial_returns = TrialReturnsById()  # async: partial returns per trajectory id
        self._ready = False
        self.weight_pushes = 0
        self.stored_at_checkpoint = 0  # async: batches stored right before a checkpoint
        self._pending_returns: list[float] = []  # async: returns of trials stored by a checkpoint, for the next log
        self.partial_trials_closed = 0  # in-progress trials closed by the last resume
        resume = os.path.exists(os.path.join(self.ckpt_dir, "latest.pt"))
        self._latest_is_ours = not resume  # never overwrite a checkpoint this trainer has not resumed
        self.logger = RunLogger(os.path.join(self.run_dir, "logs"), cfg.run_name, cfg.to_dict(),
                                cfg.wandb_project is not None, cfg.wandb_project, resume=resume) if self.dist.is_main else SilentLogger()
        self.autocast = autocast_dtype(cfg.mixed_precision, self.device)
        self.last_eval: dict = {}
        # the best periodic eval so far and its weights in ckpts/best.pt (best_eval.py)
        self.best_eval = BestEval("eval/success" if success_threshold is not None else "eval/return")

    # ------------------------------------------------------------------ parts (override to swap one)
    def build_loss(self) -> LossModule:
        """The configured `AMAGOLoss` on `self.modules` (used when no `loss=` is given)."""
        return build_loss(self.cfg, self.modules)

    def build_policy(self):
        """The acting policy on `self.modules` (before exploration)."""
        return build_policy(self.modules)

    def build_optimizer(self, params: list) -> torch.optim.Optimizer:
        """AdamW over the loss's trainable parameters (fused: one kernel for all, ~3x cheaper on CPU and CUDA)."""
        return torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=self.cfg.l2_coeff, fused=True)

    def build_target_updater(self):
        """`AMAGOSoftUpdate(loss, tau, backbone_tau)` (TorchRL's `SoftUpdate`, with `--target_backbone_tau` for the
        encoders' copy) if the loss has target parameters (`target_*_params`), else None."""
        has_targets = any(n.startswith("target_") and n.endswith("_params") for n, _ in self.loss.named_children())
        if not has_targets:
            return None
        return AMAGOSoftUpdate(self.loss, tau=self.cfg.tau)

    def build_async_collector(self, make_train_env: EnvFactory, actor, primer):
        """`--collect async`: TorchRL's MultiAsyncCollector; `--collect distributed`: workers on other machines."""
        cfg = self.cfg
        if cfg.collect == "distributed":
            return build_remote_collector(cfg, make_train_env, actor, seed=cfg.seed, primer=primer)
        return build_multiprocess_collector(cfg, make_train_env, actor, seed=cfg.seed, primer=primer,
                                            learner_threads=cfg.num_threads)

    def _add_memory_primer(self):
        """TorchRL recurrent memories keep their state in TensorDict keys: give the envs the policy's primer.
        Returns the primer (async workers add it to their own envs), or None."""
        make = getattr(self.policy, "make_tensordict_primer", None)
        if make is None or make() is None:
            return None
        for name in ("train_env", "eval_env"):
            env = getattr(self, name)
            if env is None:
                continue
            if isinstance(env, TransformedEnv):
                env.append_transform(make())
            else:
                setattr(self, name, TransformedEnv(env, make()))
        return make()

    @staticmethod
    def total_loss(out) -> torch.Tensor:
        """Sum of every differentiable `loss_*` entry (TorchRL's convention; diagnostics never start with `loss`)."""
        terms = [v for k, v in out.items() if isinstance(k, str) and k.startswith("loss_")
                 and isinstance(v, torch.Tensor) and v.requires_grad]
        if not terms:
            raise ValueError(f"the loss returned no differentiable 'loss_*' entry (keys: {sorted(out.keys())})")
        return sum(terms[1:], terms[0])

    # ------------------------------------------------------------------ collection
    def collect(self) -> dict:
        if self._collector_iter is None:
            self._collector_iter = iter(self.collector)
        self.policy.eval()
        self._refresh_acting_caches()
        t0 = time.time()
        data = next(self._collector_iter)
        dt = time.time() - t0
        returns = self.store(data)
        out = return_metrics(returns, "train", None)
        out.update(episode_metrics(data, "train"))
        out["train/env_steps_per_s"] = data.numel() / max(dt, 1e-9)
        return out

    def store(self, data) -> list[float]:
        """Check a collected batch, write it to the replay, count its steps; returns its finished trials' returns."""
        bad = nonfinite_keys(data)
        if bad:
            raise NonFiniteError(f"the training env produced NaN/inf in {bad} (non-finite elements per key) during "
                                 f"env steps {self.env_steps}..{self.env_steps + data.numel()}; nothing of this "
                                 f"batch was stored")
        self.replay.extend(data)
        self.env_steps += data.numel() * self.dist.world_size  # all ranks collect the same number of steps
        if self.async_collect:  # batches of different workers: returns are summed per trajectory id
            return self._trial_returns.add(data)
        returns, self._running_returns = finished_trial_returns(data, self._running_returns)
        return returns

    # ------------------------------------------------------------------ learning
    def ready_to_learn(self) -> bool:
        # online (+ offline) finished trials; under torchrun every rank must take the same decision. Once true it
        # stays true (the replay only drops trials to make room for newer ones)
        if not self._ready:
            self._ready = self.dist.all_true(self.sampler.num_trials() >= self.cfg.min_trials_to_learn)
        return self._ready

    def update(self) -> dict:
        """One gradient step: loss -> backward -> clip -> AdamW -> LR schedule -> SoftUpdate."""
        self.loss.train()
        if self.cql_factor is not None:  # in place: a captured graph reads the buffer
            self.loss.cql_scale.fill_(self.cql_factor(self.grad_steps))
        batch = self.sampler.sample()
        # skip decisions are joint under torchrun (a rank that skips a backward would leave DDP's all-reduce waiting);
        # the batch is checked where it was sampled (the replay's device), before it moves: no GPU sync for it
        if not self.dist.all_true(self.guard.batch_ok(batch, self.grad_steps)):
            return self._skipped_update()
        if self.cfg.cuda_graph and self.graphed is None:
            self.graphed = GraphedUpdate(self.loss_forward, self.total_loss, self.optimizer, self.params,
                                         self.cfg.grad_clip, self.target_updater, self.autocast)
        if self.graphed is not None:
            return self._graphed_update(batch)
        batch = batch.to(self.device)
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                out = self.loss_forward(batch)
        else:
            out = self.loss_forward(batch)
        total = self.total_loss(out)
        self.optimizer.zero_grad(set_to_none=True)
        if not self.dist.all_true(self.guard.loss_ok(total, out, self.grad_steps)):
            return self._skipped_update()
        self.fit_threads()
        total.backward()
        # norm first, clip after the check: clipping by a NaN norm would turn every gradient into NaN and hide
        # which parameter's gradient was non-finite
        grads = [p.grad for p in self.params if p.grad is not None]
        gnorm = torch.nn.utils.get_total_norm(grads)
        if not self.guard.grads_ok(self.loss.named_parameters(), gnorm, self.grad_steps):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skipped_update()
        torch.nn.utils.clip_grads_with_norm_(self.params, self.cfg.grad_clip, gnorm)
        self.guard.ok()
        self.fit_threads()
        self.optimizer.step()
        self.scheduler.step()
        if self.target_updater is not None:
            self.target_updater.step()
        self.grad_steps += 1
        out = out.detach()
        out.set("grad_norm", gnorm.detach())
        out.set("nonfinite_skipped", torch.zeros(()))
        return out

    def _graphed_update(self, batch) -> TensorDict:
        """`update()` through the captured graphs (trainers/graphed_update.py): the same steps and guards, one host
        read of the two finite flags between the backward and the optimizer step."""
        g = self.graphed
        out, total, gnorm = g.forward_backward(batch)
        loss_ok, grads_ok = g.finite()
        if not loss_ok and not self.guard.loss_ok(total, out, self.grad_steps):
            return self._skipped_update()
        if not grads_ok and not self.guard.grads_ok(self.loss.named_parameters(), gnorm, self.grad_steps):
            return self._skipped_update()
        self.guard.ok()
        g.step()
        self.scheduler.step()
        self.grad_steps += 1
        out.set("grad_norm", gnorm)
        out.set("nonfinite_skipped", torch.zeros(()))
        return out

    def _refresh_acting_caches(self) -> None:
        """Graph replays write the weights without bumping their version counters, so the acting caches derived
        from them (sigma-reparam W_hat, InputNorm constants) are dropped before the policy acts."""
        if self.graphed is not None:
            self.policy.clear_weight_caches()

    def _skipped_update(self):
        from tensordict import TensorDict

        return TensorDict({"nonfinite_skipped": torch.ones(())}, [])

    def learn(self) -> dict:
        t0 = time.time()
        sums: dict[str, float] = {}
        n = self.cfg.grads_per_epoch
        for _ in range(n):
            _add_scalars(sums, self.update())
        return self._update_metrics(sums, n, time.time() - t0)

    def _update_metrics(self, sums: dict, n: int, seconds: float) -> dict:
        res = {f"train-update/{k}": v / n for k, v in sums.items()} if n else {}
        res["train-update/grad_steps_per_s"] = n / max(seconds, 1e-9)
        res["train-update/lr"] = float(self.scheduler.get_last_lr()[0])  # a tensor under --cuda_graph
        if self.cql_factor is not None:
            res["train-update/cql_scale"] = self.cql_factor(max(0, self.grad_steps - 1))
        return res

    # ------------------------------------------------------------------ async collection (collection.py)
    def push_weights(self, wait: bool = True) -> None:
        """Send the acting policy's current weights to the collector workers (TorchRL's weight-update API).

        `wait=False` pushes a copy of the weights from a helper thread and returns at once, so the learner goes on
        updating while the workers take them; the next push, checkpoint or close waits for it first."""
        self.wait_for_push()
        if self.exploration is not None:
            sync_exploration_step(self.exploration, self.env_steps, self.cfg.parallel_envs)
        if hasattr(self.policy, "bump_weights_version"):  # the workers' copies then drop their weight caches
            self.policy.bump_weights_version()
        weights = TensorDict.from_module(self.actor)
        if not wait:
            weights = weights.detach().clone()  # the learner's own weights change while the push runs
        # a push waits for every worker's answer: the feed checks the workers meanwhile (never waits on a dead one)
        self._push = self.feed.start_call(lambda: self.collector.update_policy_weights_(weights), "weight push")
        self.weight_pushes += 1
        if wait:
            self.wait_for_push()

    def wait_for_push(self) -> None:
        """Wait until the last weight push has reached every worker (no-op when none is in flight)."""
        push, self._push = self._push, None
        if push is not None:
            self.feed.wait_call(push)

    def fit_threads(self) -> None:
        """Async: set the learner's torch threads for what comes next, leaving a core to each collector worker of
        this machine that is acting now and using its core (threads.py). Checked before the forward pass, the
        backward pass and the optimizer step: a worker's batch often ends inside an update. Sync: nothing."""
        if self.learner_threads is not None and self.feed is not None:
            self.learner_threads.apply(self.feed.acting_workers(), self.feed.workers_cpu_s())

    def _store_ready_batches(self) -> None:
        """Store every batch the workers have delivered (before a checkpoint: nothing delivered is lost); their
        finished trials' returns are reported with the next epoch."""
        for data in self.feed.ready():
            self._pending_returns += self.store(data)
            self.stored_at_checkpoint += 1

    def run_async_epoch(self, epoch: int) -> dict:
        """One epoch with the workers collecting beside the learner: `parallel_envs * timesteps_per_epoch` env
        steps are stored and `grads_per_epoch` updates made, the learner holding `replay_ratio` updates per stored
        env step (it waits for data when it is ahead; it stops taking batches, so the workers pause, when behind)."""
        cfg = self.cfg
        if self.feed is None:
            self.feed = CollectorFeed(self.collector, max_batches=2 * cfg.num_collectors,
                                      timeout_s=cfg.timeout_s)
            self.push_weights()  # e.g. weights and exploration step restored by resume()
            self.feed.start()
            self._env_goal = self.env_steps
        if epoch >= cfg.start_collecting_at_epoch:  # goals add up, so batches stored by a checkpoint count
            self._env_goal += cfg.parallel_envs * cfg.timesteps_per_epoch
        env_goal = self._env_goal
        grads_left = cfg.grads_per_epoch if epoch >= cfg.start_learning_at_epoch else 0
        t0, steps0, pushes0 = time.time(), self.env_steps, self.weight_pushes
        returns, self._pending_returns = self._pending_returns, []
        sums: dict[str, float] = {}
        n_updates, learner_wait = 0, 0.0
        while True:
            learning = grads_left > 0 and self.ready_to_learn()
            if learning and self.grad_steps < self.replay_ratio * self.env_steps:
                self.fit_threads()
                _add_scalars(sums, self.update())
                grads_left -= 1
                n_updates += 1
                if n_updates % cfg.policy_sync_interval == 0:
                    self.push_weights(wait=False)
                continue
            if self.env_steps >= env_goal and not learning:
                break
            tw = time.time()
            data = self.feed.get()
            if learning:
                learner_wait += time.time() - tw  # the learner is ahead of the ratio: it waits for data
            returns += self.store(data)
        self.learner_threads.restore()
        dt = time.time() - t0
        out = return_metrics(returns, "train", None)
        out["train/env_steps_per_s"] = (self.env_steps - steps0) / max(dt, 1e-9)
        out["train/learner_wait_s"] = learner_wait
        out["train/replay_ratio"] = self.grad_steps / max(self.env_steps, 1)
        out["train/weight_pushes"] = float(self.weight_pushes - pushes0)
        out["train/batches_stored_at_checkpoint"] = float(self.stored_at_checkpoint)
        out["train/partial_trials_closed_on_resume"] = float(self.partial_trials_closed)
        if n_updates:
            out.update(self._update_metrics(sums, n_updates, dt))
        return out

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, timesteps: int | None = None) -> dict:
        """Fresh acting state, fresh envs, `eval_timesteps` steps; returns of finished trials."""
        if self.eval_env is None:
            return {}
        self._refresh_acting_caches()
        policy = self.policy.fresh_copy()
        policy.deterministic = None
        policy.eval()
        policy = on_device(policy, self.device, self.eval_env.device)  # e.g. CPU envs, CUDA learner
        etype = ExplorationType.RANDOM if self.cfg.sample_actions_eval else ExplorationType.DETERMINISTIC
        t0 = time.time()
        with set_exploration_type(etype):
            ro = self.eval_env.rollout(timesteps or self.cfg.eval_timesteps, policy, break_when_any_done=False)
        dt = time.time() - t0
        ro = ro if ro.ndim == 2 else ro.unsqueeze(0)
        returns, _ = finished_trial_returns(ro)
        res = return_metrics(returns, "eval", None)
        res.update(return_metrics(returns, "eval", self.env_name))
        if self.task_names:
            res.update(per_task_return_metrics(ro, returns, "eval", self.task_names))
        res.update(episode_metrics(ro, "eval"))
        if self.success_threshold is not None:
            res["eval/success"] = (sum(r >= self.success_threshold for r in returns) / len(returns)
                                   if returns else math.nan)
        res["eval/env_steps_per_s"] = ro.numel() / max(dt, 1e-9)
        self.last_eval = res
        return res

    # ------------------------------------------------------------------ loop
    def train(self, epochs: int | None = None) -> dict:
        """Run until `epochs` (default: config.epochs); returns the last logged record."""
        cfg = self.cfg
        last = {}
        stop = cfg.epochs if epochs is None else epochs
        bar = None
        if cfg.progress_bar and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=stop, initial=self.epoch, desc=cfg.run_name, unit="epoch")
        while self.epoch < stop:
            epoch = self.epoch
            rec: dict = {"epoch": epoch}
            if cfg.eval_interval and epoch % cfg.eval_interval == 0:
                evaluated = self.evaluate()  # async: the workers keep collecting meanwhile
                self._keep_if_best(evaluated)
                rec.update(evaluated)
            if self.async_collect:
                rec.update(self.run_async_epoch(epoch))
            else:
                if epoch >= cfg.start_collecting_at_epoch and cfg.timesteps_per_epoch > 0:
                    rec.update(self.collect())
                if epoch >= cfg.start_learning_at_epoch and cfg.grads_per_epoch > 0 and self.ready_to_learn():
                    rec.update(self.learn())
            self.epoch = epoch + 1
            last = self.logger.log(rec, self.env_steps, self.grad_steps)
            if cfg.ckpt_interval and self.epoch % cfg.ckpt_interval == 0:
                self.save(tag=f"epoch_{self.epoch}")
            self.save(tag="latest")
            if bar is not None:
                bar.update(1)
                shown = {k.split("/")[-1]: round(v, 3) for k, v in last.items() if k in ("eval/return", "train/return")}
                bar.set_postfix(env_steps=self.env_steps, grads=self.grad_steps, **shown)
        if bar is not None:
            bar.close()
        return last

    def _keep_if_best(self, evaluated: dict) -> None:
        """Record a periodic eval that scores at least the best so far, and write the weights it
        evaluated to ckpts/best.pt."""
        if not self.best_eval.improved_by(evaluated):
            return
        path = self._ckpt_path("best")
        check_finite_state(self.loss.state_dict(), f"checkpoint {path}")  # NaN/inf weights: not recorded
        self.best_eval.record(evaluated, {"epoch": self.epoch, "env_steps": self.env_steps,
                                          "grad_steps": self.grad_steps})
        save_best(path, self.loss, self.best_eval, self.cfg.to_dict())

    def load_best(self) -> dict:
        """Replace the model's weights with those of the best periodic eval (ckpts/best.pt), e.g. to evaluate or
        deploy them; the optimizer and counters stay the run's. Returns the file's record (metric, value, counters).
        The weights are copied in place, so the policy's acting caches see their new versions."""
        return load_best_state(self._ckpt_path("best"), self.loss)

    def finish(self, final_eval_timesteps: int | None = None) -> dict:
        """Final evaluation + learning-curve PNG; returns the summary dict the examples print as JSON. The final eval
        runs the last weights, ckpts/best.pt's (--final_eval best) or both, the last first (--final_eval both: the
        summary's `eval_*` are the last weights', `eval_best_*` the best's). The best weights' eval is logged as
        `eval_best/*`, so the `eval/*` curve stays that of the run's own weights. After a final eval of the best
        weights the model holds them (as after :meth:`load_best`)."""
        finals = {}
        for weights in FINAL_EVALS[self.cfg.final_eval]:
            if weights == "best" and self.dist.is_main:
                self.load_best()
            res = finals[weights] = self.evaluate(final_eval_timesteps)
            if res:
                self.logger.log(res if weights == "last" else
                                {k.replace("eval/", "eval_best/", 1): v for k, v in res.items()}, self.env_steps,
                                self.grad_steps)
        self.logger.plot_curve("eval/return")
        res = finals[FINAL_EVALS[self.cfg.final_eval][0]]
        summary = {"env_steps": self.env_steps, "grad_steps": self.grad_steps,
                   "wall_s": round(self.logger.wall_time(), 1),
                   "eval_return": res.get("eval/return", math.nan)}
        if "eval/success" in res:
            summary["eval_success"] = res["eval/success"]
        summary.update({k.replace("eval/", "eval_"): v for k, v in res.items() if "/episode_" in k})
        if self.cfg.final_eval == "both":
            summary.update({f"eval_best_{k[len('eval/'):]}": v for k, v in finals["best"].items()
                            if k in ("eval/return", "eval/success")})
        summary["final_eval_weights"] = self.cfg.final_eval
        summary.update(self.best_eval.summary())
        return summary

    def run(self, example: str, final_eval_timesteps: int | None = None) -> dict:
        """What every example does: resume if a checkpoint exists, train, final eval + curve, close, and print
        the one JSON summary line. Returns the summary."""
        try:
            with self.dist.guard(self._ckpt_path("latest")):
                self.resume()
                self.train()
                summary = self.finish(final_eval_timesteps)
        finally:
            self.close()
        if self.dist.is_main:
            print_summary(example, summary)
        return summary

    def close(self) -> None:
        if self.feed is not None:
            if self._push is not None:  # a push in flight ends before the workers go (bounded: one may be dead)
                self._push.thread.join(timeout=5.0)
                self._push = None
            self.feed.close()  # stops the feed thread and shuts the collector down
            self.feed = None
        else:
            self.collector.shutdown()
        for env in (self.train_env, self.eval_env):
            if env is not None and not env.is_closed:
                env.close()
        self.logger.close()
        self.dist.close()

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_path(self, tag: str) -> str:
        return os.path.join(self.ckpt_dir, f"{tag}.pt")

    def save(self, tag: str = "latest") -> str:
        path = self._ckpt_path(tag)
        check_finite_state(self.loss.state_dict(), f"checkpoint {path}")
        if tag == "latest" and not self._latest_is_ours and os.path.exists(path):
            raise CheckpointError(f"{path} exists and was not resumed by this trainer; call resume() first (or use "
                                  f"another --run_name) so the run's checkpoint and replay are not overwritten")
        if tag == "latest" and self.feed is not None:
            self.wait_for_push()
            self._store_ready_batches()  # async: every batch the workers delivered is in the checkpoint
            sync_exploration_step(self.exploration, self.env_steps, self.cfg.parallel_envs)
        payload = {
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "exploration": self.exploration.state_dict() if self.exploration is not None else None,
            "counters": {"epoch": self.epoch, "env_steps": self.env_steps, "grad_steps": self.grad_steps},
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            BEST_EVAL: self.best_eval.state(),
        }
        if tag == "latest":
            payload.update(commit_rank_replays(self.dist, self.generations, self.replay, self.buffer_gen,
                                               self.ckpt_dir, self.epoch, self.grad_steps))  # memmaps fsynced
        if self.dist.is_main:
            save_checkpoint(path, payload)  # the file is the manifest: written last, by one rename
        if tag == "latest":
            self.dist.barrier()  # rank 0's file names every rank's new replay before old ones go
            self._latest_is_ours = True
            self.generations.remove_others(self.buffer_gen)
            remove_old_rank_files(self.dist, self.ckpt_dir, self.epoch, self.grad_steps)
        return path

    def resume(self, tag: str = "latest") -> bool:
        """Load `tag` if it exists (False otherwise). Raises CheckpointError on corrupt/mismatched files."""
        path = self._ckpt_path(tag)
        if not os.path.exists(path):
            self.dist.check_same_counters(False, 0, path)
            return False
        ckpt = load_checkpoint(path)
        # refuses unsafe config changes, listing them
        check_resume(ckpt, self.cfg, path)
        load_module_state(self.loss, with_new_target_copies(self.loss, ckpt["loss"]), "model", path)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.exploration is not None and ckpt.get("exploration") is not None:
                self.exploration.load_state_dict(ckpt["exploration"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer/schedule/exploration state does not match ({e})") from e
        apply_optimizer_settings(self.optimizer, self.scheduler, self.cfg.learning_rate, self.cfg.l2_coeff)
        c = ckpt["counters"]
        self.epoch, self.env_steps, self.grad_steps = c["epoch"], c["env_steps"], c["grad_steps"]
        # the envs restart fresh trials after a restart, so partial returns of the cut trials are dropped (their
        # steps are kept: the replay closes them as trials at the new trials' is_init)
        self._running_returns = None
        self._trial_returns.drop_partial()
        self.buffer_gen = restore_rank_replay(self.dist, self.generations, self.replay, ckpt, path, self.buffer_gen,
                                              os.path.join(self.run_dir, "buffer"))
        # trials in progress at the checkpoint (their stored steps are kept) are closed as shorter finished trials:
        # the restarted collectors begin new trials and number their trajectories from 0 again
        self.partial_trials_closed = self.replay.end_trials()
        self.logger.drop_records_after(self.epoch)  # rows logged after this checkpoint (a kill before save)
        self.best_eval.load_state(ckpt.get(BEST_EVAL))
        set_rng_state(ckpt["rng"])
        self.dist.reseed(self.cfg.seed, step=self.grad_steps)
        self.dist.check_same_counters(True, self.grad_steps, path)
        self._latest_is_ours = True
        return True


def check_trial_fits(cfg, trial_len: int | None) -> None:
    """A trial longer than the replay can never be stored whole, so learning would never start."""
    if trial_len is not None and cfg.traj_save_len is None and trial_len > cfg.dset_max_size:
        raise ValueError(f"--dset_max_size={cfg.dset_max_size} is smaller than one trial ({trial_len} steps): no "
                         f"trial would ever be stored whole; raise --dset_max_size or set --traj_save_len")


def _add_scalars(sums: dict[str, float], out) -> None:
    """Add every one-element entry of `out` to `sums`; the entries on an accelerator are read in one transfer per
    device (one sync per update instead of one per key)."""
    on_device: dict[torch.device, list] = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            if v.device.type == "cpu":
                sums[k] = sums.get(k, 0.0) + float(v)
            else:
                on_device.setdefault(v.device, []).append((k, v))
    for items in on_device.values():
        values = torch.stack([v.detach().reshape(()).double() for _, v in items]).tolist()
        for (k, _), x in zip(items, values):
            sums[k] = sums.get(k, 0.0) + x


def print_summary(example: str, summary: dict) -> None:
    """The one JSON line every example ends with."""
    print(json.dumps({"example": example, **summary}), flush=True)
