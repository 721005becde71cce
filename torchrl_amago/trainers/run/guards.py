"""Guards: NaN/inf in env steps, batches, losses, gradients and weights is named (and an update skipped)."""
from __future__ import annotations

import os
import re
import shutil
import warnings

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded
from torchrl.envs import Transform, TransformedEnv


class NonFiniteError(RuntimeError):
    """NaN or inf reached data, a loss, a gradient or the weights; the message names the key and step."""


def _key(k) -> str:
    return "/".join(k) if isinstance(k, tuple) else str(k)


def nonfinite_keys(td: TensorDictBase) -> dict[str, int]:
    """``{key: number of non-finite elements}`` over the floating-point leaves of ``td`` (empty if all finite)."""
    leaves = [(k, v) for k, v in td.items(include_nested=True, leaves_only=True)
              if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())]
    by_device: dict[torch.device, list[torch.Tensor]] = {}  # one host sync per device
    for _, v in leaves:
        by_device.setdefault(v.device, []).append(torch.isfinite(v).all())
    if all(bool(torch.stack(flags).all()) for flags in by_device.values()):
        return {}
    out = {}
    for k, v in leaves:
        n = int((~torch.isfinite(v)).sum())
        if n:
            out[_key(k)] = n
    return out


def check_steps(value, name: str) -> None:
    """`value` is None or an integer >= 1 (a ValueError names `name`)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


#: bytes an env step takes at the least (observation, action, reward, flags, next observation): the floor of
#: the sizes checked before the envs are built
MIN_STEP_BYTES = 32


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _refuse_sizes(needs: list[tuple[str, float]], have: int, where: str) -> None:
    """Raise ValueError naming the flags of the first need larger than ``have`` bytes."""
    for flags, n in needs:
        if n > have:
            raise ValueError(f"{flags} would take at least {_gb(n)}, more than the {_gb(have)} of {where}; lower "
                             f"{'it' if flags.count('--') == 1 else 'them'}")


def check_sizes(cfg, step_bytes: int = MIN_STEP_BYTES) -> None:
    """Refuse sizes the flags ask for that cannot fit in memory, before anything is allocated: the model
    (``--memory_size``), a batch (``--batch_size`` x ``--max_seq_len``), a collection epoch (``--parallel_envs`` x
    ``--timesteps_per_epoch``), the acting context and an eval rollout (``--eval_envs`` x ``--eval_timesteps``),
    each at ``step_bytes`` per env step (default: :data:`MIN_STEP_BYTES`, a floor)."""
    from ...data.safe_files import available_memory

    floats = 4  # float32 bytes
    width = floats * cfg.memory_size * cfg.memory_layers  # one activation per step and layer, the least
    needs = [(f"--memory_size={cfg.memory_size} with --memory_layers={cfg.memory_layers}",
              4 * floats * cfg.memory_size ** 2 * cfg.memory_layers),  # weights, gradients, two AdamW moments
             (f"--batch_size={cfg.batch_size} x --max_seq_len={cfg.max_seq_len}",
              cfg.batch_size * cfg.max_seq_len * (step_bytes + width)),
             (f"--parallel_envs={cfg.parallel_envs} x --timesteps_per_epoch={cfg.timesteps_per_epoch}",
              cfg.parallel_envs * cfg.timesteps_per_epoch * step_bytes),
             (f"--parallel_envs={cfg.parallel_envs} x --max_seq_len={cfg.max_seq_len}",
              cfg.parallel_envs * cfg.max_seq_len * (step_bytes + width)),
             (f"--eval_envs={cfg.eval_envs} x --eval_timesteps={cfg.eval_timesteps}",
              cfg.eval_envs * cfg.eval_timesteps * step_bytes),
             (f"--eval_envs={cfg.eval_envs} x --max_seq_len={cfg.max_seq_len}",
              cfg.eval_envs * cfg.max_seq_len * (step_bytes + width))]
    _refuse_sizes(needs, available_memory(), "memory available")
    _refuse_sizes([("these sizes together", sum(n for _, n in needs))], available_memory(), "memory available")


def step_bytes_of(env) -> int:
    """Bytes one env step of a batched ``env`` takes (its observation, action, reward and flags, and the next
    step's), from its specs."""
    td = env.fake_tensordict()
    n = max(1, td.batch_size.numel())
    return sum(v.numel() * v.element_size() for v in td.values(include_nested=True, leaves_only=True)
               if isinstance(v, torch.Tensor)) // n


def check_disk(cfg, step_bytes: int, run_dir: str) -> None:
    """The replay's memmaps are sparse: they take disk as the run writes them, up to --dset_max_size steps. Refuse
    a run whose planned steps cannot fit on the disk of its folder (what its replay already holds counts)."""
    rows = min(cfg.dset_max_size, cfg.epochs * cfg.parallel_envs * cfg.timesteps_per_epoch)
    held = sum(os.stat(os.path.join(d, f)).st_blocks * 512 for d, _, fs in os.walk(run_dir) for f in fs
               if f.endswith(".memmap") and os.path.basename(d) != "offline_buffer")
    free = shutil.disk_usage(run_dir).free
    need = rows * (step_bytes + 16) - held  # + the trial id and step the replay adds
    if need > free:
        flags = (f"--dset_max_size={cfg.dset_max_size}" if rows == cfg.dset_max_size else
                 f"--epochs={cfg.epochs} x --parallel_envs={cfg.parallel_envs} x --timesteps_per_epoch="
                 f"{cfg.timesteps_per_epoch}")
        raise ValueError(f"{flags}: the replay would store {rows} steps of {step_bytes + 16} bytes, {_gb(need)} more "
                         f"on the disk of {run_dir}, which has {_gb(free)} free; lower {flags.split('=')[0]} or free "
                         f"space")


def check_env_sizes(cfg, train_env, run_dir: str) -> None:
    """:func:`check_sizes` at the training env's own step size, and :func:`check_disk`; the trainer calls it once,
    after building the envs and before the model, the replay and the collector allocate anything (no training
    env, as with ``--eval_only``: nothing to check)."""
    if train_env is None:
        return
    step = step_bytes_of(train_env)
    check_sizes(cfg, step)
    check_disk(cfg, step, run_dir)


def check_run_args(cfg, has_eval_env: bool, trial_len: int | None) -> None:
    """The trainer's arguments against its config (a context shorter than a trial is a warning); the sizes the
    flags ask for at the least (:func:`check_sizes`)."""
    check_steps(trial_len, "rollout_horizon")
    check_sizes(cfg)
    if not has_eval_env and cfg.eval_interval > 0:
        raise ValueError(f"AMAGOTrainer(make_eval_env=None) cannot evaluate every --eval_interval={cfg.eval_interval} "
                         f"epochs: pass make_eval_env (e.g. the training factory again: AMAGOTrainer(config, make_env, "
                         f"make_env)), or set eval_interval=0 (--eval_interval 0) to train without evaluation")
    if trial_len is not None and cfg.traj_save_len is None and trial_len > cfg.dset_max_size:
        raise ValueError(f"--dset_max_size={cfg.dset_max_size} is smaller than one trial ({trial_len} steps): no "
                         f"trial would ever be stored whole; raise --dset_max_size or set --traj_save_len")
    if trial_len is not None and cfg.max_seq_len < trial_len:
        warnings.warn(f"--max_seq_len={cfg.max_seq_len} is shorter than a trial ({trial_len} steps): the policy sees "
                      f"only its last {cfg.max_seq_len} steps, so what a trial showed earlier is forgotten",
                      stacklevel=3)


class StarvedLearnerError(RuntimeError):
    """The training env ended no trial the learner could use, and will not within the run; the message names the
    env and what it did."""


def check_learner_fed(cfg, env_name: str, replay, sampler, epoch: int, grad_steps: int) -> None:
    """At the end of `epoch`: raise :class:`StarvedLearnerError` when the learner, asked to learn since
    ``--start_learning_at_epoch``, has made no update because the replay holds fewer than ``--min_trials_to_learn``
    finished trials, and that cannot change within the run: at its last epoch (``--epochs``), or once the replay
    has wrapped around without a finished trial."""
    learns = cfg.grads_per_epoch > 0 or cfg.collect != "sync"
    if grad_steps or not learns or epoch < cfg.start_learning_at_epoch:
        return
    finished = sampler.num_trials()
    idx = replay._writer.index
    if finished >= cfg.min_trials_to_learn or not (epoch + 1 >= cfg.epochs or (
            idx.write_count >= idx.capacity and replay.num_trials() == 0)):
        return
    open_units = idx.env_unit[idx.env_unit >= 0] if idx.env_unit is not None else idx.env_unit
    longest = int(idx.length_of(open_units).max()) if open_units is not None and open_units.numel() else 0
    raise StarvedLearnerError(
        f"the training env {env_name!r} gave the learner nothing to learn from: in {idx.write_count} env steps it "
        f"ended {'no trial' if not replay.num_trials() else f'{replay.num_trials()} trials'} the replay still holds "
        f"({len(open_units) if open_units is not None else 0} trials open, the longest {longest} steps long), the "
        f"learner needs --min_trials_to_learn={cfg.min_trials_to_learn} and made no update in epochs "
        f"{cfg.start_learning_at_epoch}..{epoch}. A trial that never ends is never learnt from: give the env a time "
        f"limit (e.g. gymnasium's max_episode_steps) or store open trials in pieces with --traj_save_len")


def check_collected(data: TensorDictBase, env_steps: int) -> None:
    """Raise NonFiniteError naming the keys when a collected batch holds NaN/inf (nothing of it is then stored)."""
    bad = nonfinite_keys(data)
    if bad:
        raise NonFiniteError(f"the training env produced NaN/inf in {bad} (non-finite elements per key) during "
                             f"env steps {env_steps}..{env_steps + data.numel()}; nothing of this batch was stored")


def skipped_update() -> TensorDict:
    """What an update skipped for non-finite values returns."""
    return TensorDict({"nonfinite_skipped": torch.ones(())}, [])


def check_finite_state(state: dict, where: str) -> None:
    """Raise NonFiniteError naming the first non-finite tensor of a state dict (nothing is written then)."""
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise NonFiniteError(f"{where}: weight {k!r} holds NaN/inf; the checkpoint was not written (the last "
                                 f"good checkpoint is kept)")


#: This many updates in a row skipped for non-finite values stop the run.
MAX_NONFINITE_UPDATES = 10


class FiniteGuard:
    """Skips and counts updates with non-finite values; `max_consecutive` in a row raise NonFiniteError."""

    def __init__(self, max_consecutive: int = MAX_NONFINITE_UPDATES):
        self.max_consecutive = int(max_consecutive)
        self.skipped = self.streak = 0  # skipped updates: in all, in a row
        self.first: str | None = None  # what went wrong first in the streak

    def ok(self) -> None:
        self.streak = 0
        self.first = None

    def _bad(self, what: str) -> bool:
        self.skipped += 1
        self.streak += 1
        if self.first is None:
            self.first = what
        if self.streak >= self.max_consecutive:
            raise NonFiniteError(f"{self.streak} updates in a row were skipped for non-finite values "
                                 f"(at most {self.max_consecutive}); first: {self.first}")
        return False

    def batch_ok(self, batch: TensorDictBase, step: int) -> bool:
        bad = nonfinite_keys(batch)
        return True if not bad else self._bad(f"batch key {next(iter(bad))!r} at grad step {step} (all: {bad})")

    def loss_ok(self, total: torch.Tensor, out: TensorDictBase, step: int) -> bool:
        if bool(torch.isfinite(total).all()):
            return True
        bad = [k for k, v in nonfinite_keys(out.detach()).items() if k.startswith("loss")] or ["total loss"]
        return self._bad(f"loss {bad[0]!r} at grad step {step}")

    def grads_ok(self, named_params, gnorm: torch.Tensor, step: int) -> bool:
        if bool(torch.isfinite(gnorm)):
            return True
        name = next((n for n, p in named_params if p.grad is not None and not bool(torch.isfinite(p.grad).all())),
                    "grad norm")
        return self._bad(f"gradient of {name!r} at grad step {step}")


class FiniteCheck(Transform):
    """Env transform raising NonFiniteError naming the key when a step or reset returns NaN/inf in any key, and
    warning once per key when an observation leaves its declared bounds (a ``Bounded`` spec's low / high). Both
    checks share one host sync per call: a bounded key with finite bounds is checked by its bounds alone."""

    def __init__(self, what: str = "env"):
        super().__init__()
        self.what = what
        self.calls = 0
        self._bounds: dict | None = None  # {key: (low, high, finite)} of the bounded keys not yet reported

    def _bounded(self) -> dict:
        if self._bounds is None:
            spec = self.parent.full_observation_spec if self.parent is not None else None
            leaves = spec.items(include_nested=True, leaves_only=True) if spec is not None else ()
            self._bounds = {k: (v.space.low, v.space.high, bool(torch.isfinite(v.space.low).all() and
                                                                torch.isfinite(v.space.high).all()))
                            for k, v in leaves if isinstance(v, Bounded)}
        return self._bounds

    def _check(self, td: TensorDictBase, when: str) -> None:
        bounds, by_device = self._bounded(), {}
        for k, v in td.items(include_nested=True, leaves_only=True):
            if not isinstance(v, torch.Tensor):
                continue
            b = bounds.get(k)
            if b is not None and v.shape[-b[0].dim():] == b[0].shape:
                by_device.setdefault(v.device, []).append(((v >= b[0]) & (v <= b[1])).all())
                if b[2]:
                    continue  # within finite bounds: finite
            if v.is_floating_point() or v.is_complex():
                by_device.setdefault(v.device, []).append(torch.isfinite(v).all())
        if all(bool(torch.stack(flags).all()) for flags in by_device.values()):
            return
        bad = nonfinite_keys(td)
        if bad:
            raise NonFiniteError(f"the {self.what} returned NaN/inf at its {when} (call {self.calls}) in {bad} "
                                 f"(non-finite elements per key); nothing of it was stored")
        for k, (low, high, _) in list(bounds.items()):
            v = td.get(k, None)
            out = None if v is None or v.shape[-low.dim():] != low.shape else (v < low) | (v > high)
            if out is not None and bool(out.any()):
                i = tuple(int(j) for j in out.nonzero()[0])
                lo, hi = low.expand_as(v)[i].item(), high.expand_as(v)[i].item()
                warnings.warn(f"the {self.what} returned {_key(k)!r} = {v[i].item():g} at its {when} (call "
                              f"{self.calls}, element {i}), outside its declared space [{lo:g}, {hi:g}] (its "
                              f"observation spec); the run goes on (reported once per key)", stacklevel=2)
                del bounds[k]

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        self.calls += 1
        self._check(next_tensordict, "step")
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        self._check(tensordict_reset, "reset")
        return tensordict_reset


class EnvOutputError(RuntimeError):
    """An env returned a value its specs do not allow (e.g. of another shape); the message names the env and key."""


def _named_shape_errors(env, what: str) -> None:
    """Make a shape error of ``env``'s reset or step name the env, the call and the spec keys it can be."""
    base = env
    while isinstance(base, TransformedEnv):
        base = base.base_env
    def name() -> str:  # asked on an error only: a batched env asks its sub-envs for a missing attribute
        try:
            return str(getattr(base, "env_name", None) or type(base).__name__)
        except (AttributeError, RecursionError):
            return type(base).__name__

    def named(call, when):
        def wrapped(*args, **kwargs):
            try:
                return call(*args, **kwargs)
            except RuntimeError as e:
                m = re.search(r"Shape mismatch: the value has shape (torch\.Size\(\[[\d, ]*\]\)).*spec shape "
                              r"(torch\.Size\(\[[\d, ]*\]\))", str(e))
                if m is None:
                    raise
                shape = [int(d) for d in re.findall(r"\d+", m.group(2))]
                keys = [_key(k) for k, v in base.full_observation_spec.items(include_nested=True, leaves_only=True)
                        if list(v.shape[len(v.shape) - len(shape):]) == shape] if shape else []
                raise EnvOutputError(f"the {what} ({name()}) returned a value of shape {m.group(1)} at its {when}, "
                                     f"where its spec says {m.group(2)}: key {' or '.join(map(repr, keys)) or '?'} of "
                                     f"its observation spec") from e
        return wrapped

    env._reset = named(env._reset, "reset")
    env._step = named(env._step, "step")


def guard_env(env, what: str):
    """``env`` with a :class:`FiniteCheck` as its last transform; a reset or step of the wrong shape names the env
    (:class:`EnvOutputError`)."""
    if not isinstance(env, TransformedEnv):
        env = TransformedEnv(env)
    env.append_transform(FiniteCheck(what))
    _named_shape_errors(env, what)
    return env
