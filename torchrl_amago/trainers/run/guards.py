"""Guards: NaN/inf in env steps, batches, losses, gradients and weights is named (and an update skipped)."""
from __future__ import annotations

import warnings

import torch
from tensordict import TensorDict, TensorDictBase
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


def check_run_args(cfg, has_eval_env: bool, trial_len: int | None) -> None:
    """The trainer's arguments against its config (a context shorter than a trial is a warning)."""
    check_steps(trial_len, "rollout_horizon")
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
    """Env transform raising NonFiniteError naming the key when a step or reset returns NaN/inf in any key."""

    def __init__(self, what: str = "env"):
        super().__init__()
        self.what = what
        self.calls = 0

    def _check(self, td: TensorDictBase, when: str) -> None:
        bad = nonfinite_keys(td)
        if bad:
            raise NonFiniteError(f"the {self.what} returned NaN/inf at its {when} (call {self.calls}) in {bad} "
                                 f"(non-finite elements per key); nothing of it was stored")

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        self.calls += 1
        self._check(next_tensordict, "step")
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        self._check(tensordict_reset, "reset")
        return tensordict_reset


def guard_env(env, what: str):
    """``env`` with a :class:`FiniteCheck` as its last transform."""
    if isinstance(env, TransformedEnv):
        env.append_transform(FiniteCheck(what))
        return env
    return TransformedEnv(env, FiniteCheck(what))
