"""The off-policy sequence trainer: per epoch, eval -> collect and learn -> log -> checkpoint -> hooks."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import LossModule

from ..data import make_sequence_replay
from ..objectives import AMAGOSoftUpdate
from .config import TrainConfig
from .factory import AgentModules, build_agent_modules, build_exploration, build_loss, build_policy
from .logging import ProgressBar, add_scalars, eval_record, print_summary, run_logger
from .run.best_eval import BestEval, final_evals, final_summary, keep_if_best, load_best_state
from .run.checkpoint import RunCheckpoints
from .run.guards import FiniteGuard, check_collected, check_run_args, check_steps, guard_env, skipped_update
from .run.run_dir import RunDir, run_settings
from .scale.collection import WithActionCounts, make_collection
from .scale.device import autocast, autocast_dtype, learner_forward, on_device
from .scale.distributed import start_process
from .scale.graphed_update import GraphedUpdate
from .schedules import run_cql_factor, run_lr_factor

EnvFactory = Callable[[int], EnvBase]  # num_envs -> env with batch_size [num_envs]
EVAL_STREAM = 10_000  # the eval envs are seeded with seed + this
HOOK_POINTS = ("post_eval", "post_epoch")


class AMAGOTrainer:
    """Epoch loop of the original `Experiment.learn`, over TorchRL pieces; locks the run's folder,
    ``<config.buffer_dir>/<config.run_name>``, until :meth:`close`.

    Args:
        config: the run's `TrainConfig`.
        make_train_env / make_eval_env: `num_envs -> batched env`; `make_eval_env=None` needs `eval_interval == 0`.
        modules: prebuilt `AgentModules` (default: from the config and the env specs).
        loss: a TorchRL `LossModule` to train instead of the configured `AMAGOLoss`, holding `modules`' networks
            (docs/swapping.md); or override `build_loss`, `build_policy`, `build_optimizer`, `build_target_updater`.
        timestep_encoder: a module, or a factory `(observation_spec, action_spec) -> module` called after seeding.
        exploration: module rewriting `"action"` after the policy (default: from the config; None = off).
        trial_transform: whole-trial replay transform (e.g. hindsight relabeling).
        offline_data: trial TensorDicts for a protected replay mixed with the online one at `offline_weight`.
        rollout_horizon: trial length (the bilevel exploration schedule).
        env_name / task_names: names in the eval metrics (`eval/return/<name>`; tasks by the env's `"task_id"`).
        success_threshold: a trial with return >= this is a success (`eval/success`).
        settings: an example's env flags: with the script's name and the arguments above, the run's identity.
    """

    def __init__(self, config: TrainConfig, make_train_env: EnvFactory, make_eval_env: EnvFactory | None = None, *,
                 modules: AgentModules | None = None, loss: LossModule | None = None, timestep_encoder=None,
                 exploration="config", trial_transform=None, offline_data=None, offline_weight: float = 0.8,
                 rollout_horizon: int | None = None, env_name: str = "env",
                 success_threshold: float | None = None, task_names: list[str] | None = None,
                 settings: dict | None = None):
        self.cfg = cfg = config
        self.hooks: dict[str, list[Callable]] = {point: [] for point in HOOK_POINTS}
        self.env_name, self.success_threshold = env_name, success_threshold
        self.task_names = list(task_names) if task_names else None
        check_run_args(cfg, make_eval_env is not None, rollout_horizon)
        identity = run_settings(settings, env_name=env_name, rollout_horizon=rollout_horizon,
                                task_names=self.task_names, success_threshold=success_threshold)
        self.dist = start_process(cfg)  # torchrun's group, the seed, torch's threads
        self.device = self.dist.device
        self.run_folder = RunDir(cfg.buffer_dir, cfg.run_name, self.dist.rank, identity)  # locked until close()
        self.run_dir = self.run_folder.path
        with self.run_folder.released_on_error():
            self.checkpoints = RunCheckpoints(self.run_folder, self.dist)
            self.collection = make_collection(cfg, self.dist.world_size)
            make_train_env = self.build_envs(make_train_env, make_eval_env)
            self.modules = modules or build_agent_modules(cfg, self.train_env.observation_spec,
                                                          self.train_env.action_spec, timestep_encoder=timestep_encoder)
            self.build_learner(loss)
            self.dist.reseed(cfg.seed)  # ranks > 0: own streams for sampling, dropout, exploration
            primer = self.build_actor(exploration, rollout_horizon)
            self.params = [p for p in self.loss.parameters() if p.requires_grad]
            self.optimizer = self.build_optimizer(self.params)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, run_lr_factor(cfg))
            self.target_updater = self.build_target_updater()
            self.build_replay(trial_transform, offline_data, offline_weight)
            self.collector = self.collection.build_collector(self, make_train_env, primer)
            self.epoch = self.env_steps = self.grad_steps = 0
            self._ready, self.partial_trials_closed = False, 0  # trials the last resume closed
            self.logger = run_logger(cfg, self.run_dir, self.dist.is_main, resume=self.checkpoints.resuming)
            self.autocast = autocast_dtype(cfg.mixed_precision, self.device)
            self.best_eval = BestEval("eval/success" if self.success_threshold is not None else "eval/return")
            self.register_hook("post_eval", keep_if_best)  # ckpts/best.pt

    def build_envs(self, make_train_env: EnvFactory, make_eval_env: EnvFactory | None) -> EnvFactory:
        """The training env and, on rank 0, the eval env, guarded and seeded; returns the training factory."""
        cfg = self.cfg
        if cfg.count_heads:
            make_train_env = WithActionCounts(make_train_env)
            make_eval_env = make_eval_env and WithActionCounts(make_eval_env)
        self.train_env = guard_env(make_train_env(self.collection.local_envs), "training env")
        self.train_env.set_seed(cfg.seed + self.dist.seed_offset)
        self.eval_env = (guard_env(make_eval_env(cfg.eval_envs), "eval env")
                         if make_eval_env is not None and self.dist.is_main else None)
        if self.eval_env is not None:
            self.eval_env.set_seed(cfg.seed + EVAL_STREAM)
        return make_train_env

    def build_learner(self, loss: LossModule | None) -> None:
        """The loss on the learner's device, the `--cql_ramp` factor and the loss forward (scale/device.py)."""
        self.loss = (loss if loss is not None else self.build_loss()).to(self.device)
        self.cql_factor = run_cql_factor(self.cfg, self.loss)
        self.guard = FiniteGuard()
        self.loss_forward = learner_forward(self.loss, self.cfg, self.dist)
        self.graphed: GraphedUpdate | None = None  # --cuda_graph: built at the first update

    def build_actor(self, exploration, rollout_horizon: int | None):
        """The policy and its exploration (`self.actor`); returns a TorchRL recurrent policy's primer, or None."""
        self.policy = self.build_policy()
        make_primer = getattr(self.policy, "make_tensordict_primer", lambda: None)
        primer = make_primer()
        for env in [e for e in (self.train_env, self.eval_env) if e is not None and primer is not None]:
            env.append_transform(make_primer())
        self.policy.deterministic = None if self.cfg.sample_actions_train else True
        self.exploration = (build_exploration(self.cfg, self.train_env.action_spec, rollout_horizon)
                            if exploration == "config" else exploration)
        actor = self.policy if self.exploration is None else TensorDictSequential(self.policy, self.exploration)
        self.actor = actor.to(self.device)  # on the learner's device: the Collector would act with a copy
        return primer

    def build_replay(self, trial_transform, offline_data, offline_weight: float) -> None:
        """The online replay (run/checkpoint.py) and, with `offline_data`, an offline one mixed in; `self.sampler`."""
        cfg = self.cfg
        kw = dict(padded_sampling=cfg.padded_sampling, trial_transform=trial_transform, max_trial_len=cfg.traj_save_len,
                  trim=cfg.trim_windows)
        self.replay = self.checkpoints.new_replay(cfg.dset_max_size, cfg.max_seq_len, cfg.batch_size, **kw)
        self.sampler = self.replay
        self.offline_replay = None
        if offline_data is not None:
            from ..data import MixedReplay, load_offline_trials

            offline_dir = self.dist.rank_path(os.path.join(self.run_dir, "offline_buffer"))
            shutil.rmtree(offline_dir, ignore_errors=True)  # rebuilt at every start
            self.offline_replay = make_sequence_replay(max(cfg.dset_max_size, 1), cfg.max_seq_len, cfg.batch_size,
                                                       scratch_dir=offline_dir, **kw)
            self.offline_report: dict = {}  # trials dropped for NaN/inf (--nonfinite_data drop), by key
            load_offline_trials(self.offline_replay, offline_data, nonfinite=cfg.nonfinite_data,
                                report=self.offline_report)
            self.sampler = MixedReplay([self.offline_replay, self.replay], [offline_weight, 1 - offline_weight],
                                       batch_size=cfg.batch_size)

    def build_loss(self) -> LossModule:
        """The configured `AMAGOLoss` on `self.modules` (used when no `loss=` is given)."""
        return build_loss(self.cfg, self.modules)

    def build_policy(self):
        """The acting policy on `self.modules` (before exploration)."""
        return build_policy(self.modules)

    def build_optimizer(self, params: list) -> torch.optim.Optimizer:
        """Fused AdamW over the loss's trainable parameters."""
        return torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=self.cfg.l2_coeff, fused=True)

    def build_target_updater(self):
        """`AMAGOSoftUpdate(loss, tau)` if the loss has target parameters (`target_*_params`), else None."""
        if not any(n.startswith("target_") and n.endswith("_params") for n, _ in self.loss.named_children()):
            return None
        return AMAGOSoftUpdate(self.loss, tau=self.cfg.tau)

    @staticmethod
    def total_loss(out) -> torch.Tensor:
        """Sum of every differentiable `loss_*` entry (TorchRL's convention)."""
        terms = [v for k, v in out.items() if isinstance(k, str) and k.startswith("loss_")
                 and isinstance(v, torch.Tensor) and v.requires_grad]
        if not terms:
            raise ValueError(f"the loss returned no differentiable 'loss_*' entry (keys: {sorted(out.keys())})")
        return sum(terms[1:], terms[0])

    def register_hook(self, point: str, fn: Callable) -> Callable:
        """Call `fn(trainer, metrics)` at `point` of every epoch ("post_eval", "post_epoch"); returns `fn`."""
        if point not in self.hooks:
            raise ValueError(f"register_hook: {point!r} is not one of {list(self.hooks)}")
        self.hooks[point].append(fn)
        return fn

    def train(self, epochs: int | None = None) -> dict:
        """Run until `epochs` (default: config.epochs); returns the last logged record."""
        cfg, last = self.cfg, {}
        stop = cfg.epochs if epochs is None else epochs
        bar = ProgressBar(cfg.run_name, self.epoch, stop, shown=cfg.progress_bar and self.dist.is_main)
        while self.epoch < stop:
            epoch = self.epoch
            rec: dict = {"epoch": epoch}
            if cfg.eval_interval and epoch % cfg.eval_interval == 0:
                evaluated = self.evaluate()
                for hook in self.hooks["post_eval"]:
                    hook(self, evaluated)
                rec.update(evaluated)
            rec.update(self.collection.run_epoch(self, epoch))  # collect + learn
            self.epoch = epoch + 1
            last = self.logger.log(rec, self.env_steps, self.grad_steps)
            if cfg.ckpt_interval and self.epoch % cfg.ckpt_interval == 0:
                self.save(tag=f"epoch_{self.epoch}")
            self.save(tag="latest")
            for hook in self.hooks["post_epoch"]:
                hook(self, last)
            bar.update(last, self.env_steps, self.grad_steps)
        bar.close()
        return last

    def collect(self) -> dict:
        """Act in the training envs for one collector batch and store it (sync: the epoch's steps)."""
        return self.collection.collect(self)

    def store(self, data) -> list[float]:
        """Check a collected batch, write it to the replay, count its steps; returns its finished trials' returns."""
        check_collected(data, self.env_steps)
        self.replay.extend(data)
        self.env_steps += data.numel() * self.dist.world_size  # every rank collects as many
        return self.collection.finished_returns(data)

    def ready_to_learn(self) -> bool:
        """Enough finished trials (online + offline), on every rank; once true it stays true."""
        if not self._ready:
            self._ready = self.dist.all_true(self.sampler.num_trials() >= self.cfg.min_trials_to_learn)
        return self._ready

    def learn(self) -> dict:
        """The epoch's `grads_per_epoch` updates; returns their mean outputs."""
        t0, sums, n = time.time(), {}, self.cfg.grads_per_epoch
        for _ in range(n):
            add_scalars(sums, self.update())
        return self.update_metrics(sums, n, time.time() - t0)

    def update(self) -> TensorDict:
        """One gradient step (loss, backward, clip, AdamW, SoftUpdate, LR); NaN/inf skips and counts it."""
        self.loss.train()
        if self.cql_factor is not None:  # in place: a captured graph reads it
            self.loss.cql_scale.fill_(self.cql_factor(self.grad_steps))
        batch = self.sampler.sample()
        if not self.dist.all_true(self.guard.batch_ok(batch, self.grad_steps)):
            return skipped_update()
        if self.cfg.cuda_graph or self.graphed is not None:
            return self._graphed_update(batch)
        batch = batch.to(self.device)
        with autocast(self.device, self.autocast):
            out = self.loss_forward(batch)
        total = self.total_loss(out)
        self.optimizer.zero_grad(set_to_none=True)
        if not self.dist.all_true(self.guard.loss_ok(total, out, self.grad_steps)):
            return skipped_update()
        self.collection.fit_threads()
        total.backward()
        gnorm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if not self.guard.grads_ok(self.loss.named_parameters(), gnorm, self.grad_steps):
            self.optimizer.zero_grad(set_to_none=True)
            return skipped_update()
        torch.nn.utils.clip_grads_with_norm_(self.params, self.cfg.grad_clip, gnorm)
        self.guard.ok()
        self.collection.fit_threads()
        self.optimizer.step()
        if self.target_updater is not None:
            self.target_updater.step()
        return self._stepped(out.detach(), gnorm.detach())

    def _graphed_update(self, batch) -> TensorDict:
        if self.graphed is None:
            self.graphed = GraphedUpdate(self.loss_forward, self.total_loss, self.optimizer, self.params,
                                         self.cfg.grad_clip, self.target_updater, self.autocast)
        done = self.graphed.guarded_update(batch, self.guard, self.loss.named_parameters(), self.grad_steps)
        return skipped_update() if done is None else self._stepped(*done)

    def _stepped(self, out: TensorDict, gnorm: torch.Tensor) -> TensorDict:
        self.scheduler.step()
        self.grad_steps += 1
        out.set("grad_norm", gnorm)
        out.set("nonfinite_skipped", torch.zeros(()))
        return out

    def update_metrics(self, sums: dict, n: int, seconds: float) -> dict:
        """The `train-update/*` record of `n` updates whose outputs add up to `sums`."""
        res = {f"train-update/{k}": v / n for k, v in sums.items()} if n else {}
        res["train-update/grad_steps_per_s"] = n / max(seconds, 1e-9)
        res["train-update/lr"] = float(self.scheduler.get_last_lr()[0])  # a tensor under --cuda_graph
        if self.cql_factor is not None:
            res["train-update/cql_scale"] = self.cql_factor(max(0, self.grad_steps - 1))
        return res

    def refresh_acting_caches(self) -> None:
        """Drop the policy's weight caches after graph replays (they do not bump version counters)."""
        if self.graphed is not None:
            self.policy.clear_weight_caches()

    feed = property(lambda self: self.collection.feed, doc="The async workers' `CollectorFeed` (None: sync).")
    weight_pushes = property(lambda self: self.collection.weight_pushes, doc="Weight pushes to the workers so far.")
    replay_ratio = property(lambda self: self.collection.replay_ratio, doc="Updates per stored env step (async).")

    def push_weights(self, wait: bool = True) -> None:
        """Send the acting weights to the workers; `wait=False` returns at once."""
        self.collection.push_weights(self, wait)

    def wait_for_push(self) -> None:
        """Wait until the last weight push has reached every worker."""
        self.collection.wait_for_push()

    @torch.no_grad()
    def evaluate(self, timesteps: int | None = None) -> dict:
        """Fresh acting state, fresh envs, `eval_timesteps` steps; returns of finished trials."""
        if self.eval_env is None:
            return {}
        self.refresh_acting_caches()
        policy = self.policy.fresh_copy()
        policy.deterministic = None
        policy.eval()
        policy = on_device(policy, self.device, self.eval_env.device)
        etype = ExplorationType.RANDOM if self.cfg.sample_actions_eval else ExplorationType.DETERMINISTIC
        t0 = time.time()
        with set_exploration_type(etype):
            ro = self.eval_env.rollout(timesteps or self.cfg.eval_timesteps, policy, break_when_any_done=False)
        dt = time.time() - t0
        return eval_record(ro if ro.ndim == 2 else ro.unsqueeze(0), dt, self.env_name, self.task_names,
                           self.success_threshold)

    def finish(self, final_eval_timesteps: int | None = None) -> dict:
        """Final evaluation (`--final_eval`) and the learning curves; returns the summary the examples print."""
        finals = final_evals(self, final_eval_timesteps)
        self.logger.plot_curve("eval/return")
        attempts = sorted({k for r in self.logger.records for k in r if re.fullmatch(r"eval/episode_\d+_return", k)},
                          key=lambda k: int(k.split("_")[1]))  # episode_2 before episode_10
        if attempts:  # meta-RL: the return of each attempt over training
            self.logger.plot_curve(attempts, os.path.join(self.logger.log_dir, "attempts.png"))
        return final_summary(self, finals)

    def run(self, final_eval_timesteps: int | None = None) -> dict:
        """Resume if a checkpoint exists, train, finish, close, print the JSON summary line; returns the summary."""
        if isinstance(final_eval_timesteps, str):
            self.close()
            raise TypeError(f"run({final_eval_timesteps!r}): run() takes no name; the run's folder is "
                            f"config.run_name (--run_name), here {self.run_dir}")
        check_steps(final_eval_timesteps, "final_eval_timesteps")
        try:
            with self.dist.guard(self.checkpoints.path("latest")):
                self.resume()
                self.train()
                summary = self.finish(final_eval_timesteps)
        finally:
            self.close()
        if self.dist.is_main:
            print_summary(Path(self.run_folder.settings["script"]).stem, summary)
        return summary

    def close(self) -> None:
        """Stop the workers, close the envs and the logger, and release the run folder."""
        try:
            self.collection.close()
            for env in (self.train_env, self.eval_env):
                if env is not None and not env.is_closed:
                    env.close()
            self.logger.close()
            self.dist.close()
        finally:
            self.run_folder.close()

    def save(self, tag: str = "latest") -> str:
        """Write `ckpts/<tag>.pt`; `latest` also commits the replay (run/checkpoint.py). Returns the path."""
        return self.checkpoints.save(self, tag)

    def resume(self, tag: str = "latest") -> bool:
        """Load `tag` if it exists (False otherwise). Raises CheckpointError on corrupt/mismatched files."""
        return self.checkpoints.resume(self, tag)

    def load_best(self) -> dict:
        """Load ckpts/best.pt's weights into the model in place (optimizer and counters stay); returns its record."""
        return load_best_state(self.checkpoints.path("best"), self.loss, self.run_folder.identity)
