"""The off-policy sequence trainer: per epoch, eval -> collect and learn -> log -> checkpoint -> hooks."""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from tensordict.nn import TensorDictSequential
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import LossModule

from ..data import make_sequence_replay
from ..envs import require_amago_keys, spec_shapes
from ..objectives import AMAGOSoftUpdate
from .collection import Acting, Counters, WithActionCounts, make_collection
from .config import TrainConfig
from .factory import AgentModules, build_agent_modules, build_exploration, build_loss, build_policy
from .learner import Learner, total_loss
from .logging import ProgressBar, eval_record, print_summary, run_logger
from .run.best_eval import BEST_EVAL, FINAL_EVALS, BestEval, final_summary, run_summary
from .run.checkpoint import CheckpointError, RunCheckpoints, check_checkpoint, rng_state, set_rng_state
from .run.guards import check_collected, check_env_sizes, check_learner_fed, check_run_args, check_steps, guard_env
from .run.resume_config import extension_note
from .run.run_dir import RunDir, run_settings
from .run.signals import stop_on_signals
from .saved_run import SavedRun
from .scale.device import autocast_dtype, learner_forward, on_device, precision_name
from .scale.distributed import start_process

EnvFactory = Callable[[int], EnvBase]  # num_envs -> env with batch_size [num_envs]
EVAL_STREAM = 10_000  # the eval envs are seeded with seed + this
HOOK_POINTS = ("post_eval", "post_epoch")


class AMAGOTrainer:
    """Epoch loop of the original `Experiment.learn`, over TorchRL pieces; locks the run's folder,
    ``<config.buffer_dir>/<config.run_name>``, until :meth:`close`. With ``config.eval_only`` set it only evaluates
    the run's saved weights (:meth:`run`): it builds no replay, optimizer or collector and writes nothing.

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
        evaluating = cfg.eval_only is not None
        check_run_args(cfg, make_eval_env is not None, rollout_horizon)
        if evaluating and make_eval_env is None:
            raise ValueError(f"--eval_only {cfg.eval_only} evaluates in the eval envs: pass make_eval_env")
        identity = run_settings(settings, env_name=env_name, rollout_horizon=rollout_horizon,
                                task_names=self.task_names, success_threshold=success_threshold)
        self.dist = start_process(cfg)  # torchrun's group, the seed, torch's threads
        self.device = self.dist.device
        if evaluating and self.dist.world_size > 1:
            raise ValueError(f"--eval_only {cfg.eval_only} runs in one process, not under torchrun")
        self.run_folder = RunDir(cfg.buffer_dir, cfg.run_name, self.dist.rank, identity, read_only=evaluating)
        self.run_dir = self.run_folder.path
        with self.run_folder.released_on_error():
            if not evaluating:
                self.checkpoints = RunCheckpoints(self.run_folder, self.dist)
                self.collection = make_collection(cfg, self.dist.world_size)
            make_train_env = self.build_envs(make_train_env, make_eval_env)
            check_env_sizes(cfg, self.train_env, self.run_dir)  # what the flags ask for, at the env's step size
            specs = self.train_env if self.train_env is not None else self.eval_env
            self.modules = modules or build_agent_modules(cfg, specs.observation_spec, specs.action_spec,
                                                          timestep_encoder=timestep_encoder)
            self.loss = (loss if loss is not None else self.build_loss()).to(self.device)
            self.dist.reseed(cfg.seed)  # ranks > 0: own streams for sampling, dropout, exploration
            primer = self.build_actor(exploration, rollout_horizon)
            self.best_eval = BestEval("eval/success" if self.success_threshold is not None else "eval/return")
            if evaluating:
                return
            self.learner = self.build_learner()
            self.build_replay(trial_transform, offline_data, offline_weight)
            acting = Acting(self.actor, self.policy, self.exploration, primer, self.device, self.refresh_acting_caches)
            self.collector = self.collection.build_collector(make_train_env, self.train_env, acting)
            self.counters, self._ready, self._config_written = Counters(), False, False
            self.logger = run_logger(cfg, self.run_dir, self.dist.is_main, resume=self.checkpoints.resuming)

    def build_envs(self, make_train_env: EnvFactory, make_eval_env: EnvFactory | None) -> EnvFactory:
        """The training env (none when only evaluating) and, on rank 0, the eval env, guarded and seeded; returns
        the training factory."""
        cfg = self.cfg
        if cfg.count_heads:
            make_train_env = WithActionCounts(make_train_env)
            make_eval_env = make_eval_env and WithActionCounts(make_eval_env)
        self.train_env = None
        if cfg.eval_only is None:
            self.train_env = guard_env(make_train_env(self.collection.local_envs), "training env")
            require_amago_keys(self.train_env, "training env")
            self.train_env.set_seed(cfg.seed + self.dist.seed_offset)
        self.eval_env = (guard_env(make_eval_env(cfg.eval_envs), "eval env")
                         if make_eval_env is not None and self.dist.is_main else None)
        if self.eval_env is not None:
            require_amago_keys(self.eval_env, "eval env")
            self.eval_env.set_seed(cfg.seed + EVAL_STREAM)
        return make_train_env

    def build_actor(self, exploration, rollout_horizon: int | None):
        """The policy and its exploration (`self.actor`); returns a TorchRL recurrent policy's primer, or None."""
        self.policy = self.build_policy()
        make_primer = getattr(self.policy, "make_tensordict_primer", lambda: None)
        primer = make_primer()
        for env in [e for e in (self.train_env, self.eval_env) if e is not None and primer is not None]:
            env.append_transform(make_primer())
        self.policy.deterministic = None if self.cfg.sample_actions_train else True
        spec_env = self.train_env if self.train_env is not None else self.eval_env
        self.exploration = (build_exploration(self.cfg, spec_env.action_spec, rollout_horizon)
                            if exploration == "config" else exploration)
        actor = self.policy if self.exploration is None else TensorDictSequential(self.policy, self.exploration)
        self.actor = actor.to(self.device)  # on the learner's device: the Collector would act with a copy
        return primer

    def build_learner(self) -> Learner:
        """The `Learner` of the loss: the optimizer, schedules, target updater and the loss as the learner calls it
        (DDP under torchrun, compiled with --compile_loss)."""
        cfg, params = self.cfg, [p for p in self.loss.parameters() if p.requires_grad]
        return Learner(self.loss, self.build_optimizer(params), lambda: self.sampler.sample(), cfg,
                       target_updater=self.build_target_updater(), device=self.device,
                       loss_forward=learner_forward(self.loss, cfg, self.dist),
                       precision=autocast_dtype(cfg.mixed_precision, self.device), all_true=self.dist.all_true,
                       fit_threads=self.collection.fit_threads, on_graph_replay=self.policy.clear_weight_caches)

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

    total_loss = staticmethod(total_loss)
    epoch = property(lambda self: self.counters.epoch, doc="Epochs done.")
    env_steps = property(lambda self: self.counters.env_steps, doc="Env steps stored (all torchrun ranks).")
    grad_steps = property(lambda self: self.learner.grad_steps, doc="Gradient steps made.")

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
                self.keep_if_best(evaluated)
                for hook in self.hooks["post_eval"]:
                    hook(self, evaluated)
                rec.update(evaluated)
            rec.update(self.collection.run_epoch(epoch, self.learner, self.store, self.ready_to_learn, self.counters))
            self.counters.epoch = epoch + 1
            last = self.logger.log(rec, self.env_steps, self.grad_steps)
            if cfg.ckpt_interval and self.epoch % cfg.ckpt_interval == 0:
                self.save(tag=f"epoch_{self.epoch}")
            self.save(tag="latest")
            check_learner_fed(cfg, self.env_name, self.replay, self.sampler, epoch, self.grad_steps)
            for hook in self.hooks["post_epoch"]:
                hook(self, last)
            bar.update(last, self.env_steps, self.grad_steps)
        bar.close()
        return last

    def store(self, data) -> list[float]:
        """Check a collected batch, write it to the replay, count its steps; returns its finished trials' returns."""
        check_collected(data, self.env_steps)
        self.replay.extend(data)
        self.counters.env_steps += data.numel() * self.dist.world_size  # every rank collects as many
        return self.collection.finished_returns(data)

    def ready_to_learn(self) -> bool:
        """Enough finished trials (online + offline), on every rank; once true it stays true."""
        if not self._ready:
            self._ready = self.dist.all_true(self.sampler.num_trials() >= self.cfg.min_trials_to_learn)
        return self._ready

    def refresh_acting_caches(self) -> None:
        """Drop the policy's weight caches after graph replays (they do not bump version counters)."""
        if self.learner.graphed is not None:
            self.policy.clear_weight_caches()

    @torch.no_grad()
    def evaluate(self, timesteps: int | None = None) -> dict:
        """Fresh acting state, fresh envs, `eval_timesteps` steps; returns of finished trials."""
        if self.eval_env is None:
            return {}
        policy = self.policy.fresh_copy()
        policy.clear_weight_caches()
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

    def keep_if_best(self, evaluated: dict) -> None:
        """An eval scoring at least the best so far writes its (finite) weights to ``ckpts/best.pt``."""
        if self.best_eval.improved_by(evaluated):
            self.best_eval.keep(evaluated, self.progress(), self.loss.state_dict(), self.cfg.to_dict(),
                                self.run_folder.entry(), self.checkpoints.path("best"))

    def finish(self, final_eval_timesteps: int | None = None) -> dict:
        """Final evaluation (`--final_eval`) and the learning curves; returns the summary the examples print."""
        finals = {}
        for weights in FINAL_EVALS[self.cfg.final_eval]:
            if weights == "best" and self.dist.is_main:
                self.load_best()
            res = finals[weights] = self.evaluate(final_eval_timesteps)
            if res:
                named = res if weights == "last" else {k.replace("eval/", "eval_best/", 1): v for k, v in res.items()}
                self.logger.log(named, self.env_steps, self.grad_steps)
        self.logger.plot_curve("eval/return")
        attempts = sorted({k for r in self.logger.records for k in r if re.fullmatch(r"eval/episode_\d+_return", k)},
                          key=lambda k: int(k.split("_")[1]))  # episode_2 before episode_10
        if attempts:  # meta-RL: the return of each attempt over training
            self.logger.plot_curve(attempts, os.path.join(self.logger.log_dir, "attempts.png"))
        summary = final_summary(self.progress(), finals, self.cfg.final_eval, self.logger.wall_time(),
                                self.best_eval)
        return {**summary, "precision": precision_name(self.learner.precision)}  # what --mixed_precision chose

    def evaluate_saved(self, tag: str, timesteps: int | None = None) -> dict:
        """Load the run's `tag` weights ("best" or "latest", checked) and evaluate them; the summary the examples
        print (the checkpoint's counters, the eval's return, success and per-attempt numbers)."""
        counters = SavedRun(self.run_dir).load_weights(self.loss, tag, self.run_folder.identity)
        return {**run_summary(counters, self.evaluate(timesteps)), "eval_weights": tag}

    def run(self, final_eval_timesteps: int | None = None) -> dict:
        """Resume if a checkpoint exists, train, finish, close, print the JSON summary line; returns the summary.
        With ``config.eval_only``: evaluate the saved weights instead, close, print."""
        if isinstance(final_eval_timesteps, str):
            self.close()
            raise TypeError(f"run({final_eval_timesteps!r}): run() takes no name; the run's folder is "
                            f"config.run_name (--run_name), here {self.run_dir}")
        check_steps(final_eval_timesteps, "final_eval_timesteps")
        try:
            if self.cfg.eval_only is not None:
                summary = self.evaluate_saved(self.cfg.eval_only, final_eval_timesteps)
            else:
                latest = self.checkpoints.path("latest")
                with stop_on_signals(latest, self.cfg.epochs), self.dist.guard(latest):
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
            if self.cfg.eval_only is None:
                self.collection.close()
            for env in (self.train_env, self.eval_env):
                if env is not None and not env.is_closed:
                    env.close()
            if self.cfg.eval_only is None:
                self.logger.close()
            self.dist.close()
        finally:
            self.run_folder.close()

    def progress(self) -> dict:
        """The counters: epochs done, env steps stored, gradient steps."""
        return {"epoch": self.epoch, "env_steps": self.env_steps, "grad_steps": self.grad_steps}

    def state_dict(self) -> dict:
        """Everything a checkpoint holds besides the replay: the learner's state (loss, optimizer, schedule), the
        exploration's, the counters, RNG states, the config and the best eval."""
        return {**self.learner.state_dict(), "counters": self.progress(), "rng": rng_state(),
                "config": self.cfg.to_dict(),
                "exploration": self.exploration.state_dict() if self.exploration is not None else None,
                BEST_EVAL: self.best_eval.state()}

    def load_state_dict(self, state: dict, path: str = "state") -> None:
        """Restore :meth:`state_dict` (checked beforehand: `check_checkpoint`); `path` names it in errors."""
        counters = state["counters"]
        try:
            self.learner.load_state_dict(state, counters["grad_steps"])
            if self.exploration is not None and state.get("exploration") is not None:
                self.exploration.load_state_dict(state["exploration"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"checkpoint {path}: optimizer/schedule/exploration state does not match "
                                  f"({e})") from e
        self.counters.epoch, self.counters.env_steps = counters["epoch"], counters["env_steps"]
        self.best_eval.load_state(state.get(BEST_EVAL))
        set_rng_state(state["rng"])

    def save(self, tag: str = "latest") -> str:
        """Write `ckpts/<tag>.pt`; `latest` also commits the replay and `config.json`. Returns the path."""
        if tag == "latest":
            self.collection.before_checkpoint(self.store, self.counters)
            if not self._config_written:
                self.run_folder.write_config(self.cfg.to_dict(), precision=precision_name(self.learner.precision),
                                             observations=spec_shapes(self.train_env.observation_spec))
                self._config_written = True
        return self.checkpoints.save(self.state_dict(), self.replay, tag)

    def resume(self, tag: str = "latest") -> bool:
        """Load `tag` if it exists (False otherwise). Raises CheckpointError on corrupt/mismatched files."""
        found = self.checkpoints.load(tag, lambda ckpt, path: check_checkpoint(
            ckpt, path, tag, run=self.run_folder, cfg=self.cfg, loss=self.loss, optimizer=self.learner.optimizer,
            replay=self.replay, metrics=self.logger))
        if found is None:
            return False
        ckpt, path, identity = found
        self.load_state_dict(ckpt, path)
        self.dist.reseed(self.cfg.seed, step=self.grad_steps)
        self.collection.on_resume(self.checkpoints.resumed(self.replay, ckpt, path, identity))
        self.logger.drop_records_after(self.epoch)
        if self.dist.is_main:
            print(f"resuming {self.run_dir} at epoch {self.epoch} ({self.env_steps} env steps, {self.grad_steps} "
                  f"updates)", file=sys.stderr, flush=True)
            note = extension_note(ckpt["config"], self.cfg, self.learner.planned_updates)
            if note:
                warnings.warn(note, stacklevel=2)
        return True

    def load_best(self) -> dict:
        """Load ckpts/best.pt's weights into the model in place (optimizer and counters stay); returns its record."""
        return SavedRun(self.run_dir).load_best(self.loss, self.run_folder.identity)

