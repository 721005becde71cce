"""Typed training configuration: everything the original's common CLI covers, as one dataclass.

Names follow the original CLI where one exists (`--epochs`, `--timesteps_per_epoch`, `--batches_per_epoch`
is `grads_per_epoch` here, `--parallel_actors` is `parallel_envs`, `--traj_encoder`, `--memory_size`, ...).
Every field is a CLI flag of every example (see `trainers/cli.py`); its help text is in `trainers/flag_help.py`.
Defaults and choices that belong to a lower layer are read from it (the loss, the heads, the replay sampler), so
the config, the CLI and the docs never hold a copy.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.sampler import PADDING_MODES, SAMPLING_MODES, TrialWindowSampler
from ..envs.exploration import EpsilonGreedy
from ..modules.cnn import BACKBONES
from ..modules.distributions import CONTINUOUS_OUTPUTS, DEFAULT_DISCRETE_CLIP
from ..modules.heads import ActorHead, DiscreteCritic, TwoHotCritic
from ..modules.timestep import CNNTimestepEncoder
from ..modules.trajectory.transformer import POS_EMBS
from ..objectives import DEFAULT_BACKBONE_TAU, DEFAULT_MULTIGAMMAS, DEFAULT_TAU, AMAGOLoss
from ..objectives.amago_loss import ACTOR_ENCODER_GRADS
from ..objectives.filters import FILTERS as FILTER_FUNCTIONS
from ..objectives.packing import PACK_MODES
from ..modules.trajectory.registry import trajectory_encoder_names
from .collection import COLLECT_MODES
from .config_checks import NONFINITE_DATA, check_ranges
from .best_eval import FINAL_EVALS
from .cql_schedule import check_cql_flags
from .device import COMPILE_MODES, PRECISION_DTYPES
from .lr_schedule import LR_DECAYS


class _LiveChoices(Sequence):
    """Choices read when used, from a registry that may grow after import (``register_trajectory_encoder``)."""

    def __init__(self, read):
        self._read = read

    def __getitem__(self, i):
        return self._read()[i]

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return repr(self._read())


# --traj_encoder choices: the trajectory-encoder registry
TRAJ_ENCODERS = _LiveChoices(trajectory_encoder_names)
AGENT_TYPES = ("agent", "multitask")
PRECISIONS = tuple(PRECISION_DTYPES)  # the autocast dtypes the learner knows (trainers/device.py)
FILTERS = tuple(FILTER_FUNCTIONS)
EXPLORATIONS = ("egreedy", "bilevel", "none")


def default_of(fn, name: str):
    """The default of argument `name` of `fn` (a class: its constructor), so the config repeats no default."""
    return inspect.signature(fn).parameters[name].default


def _loss(name: str):
    return default_of(AMAGOLoss, name)


#: The allowed values of the fields that take a name, each read from the layer that defines the names.
FIELD_CHOICES = {
    "traj_encoder": TRAJ_ENCODERS,
    "agent_type": AGENT_TYPES,
    "mixed_precision": PRECISIONS,
    "fbc_filter": FILTERS,
    "sampling": SAMPLING_MODES,
    "padded_sampling": PADDING_MODES,
    "exploration": EXPLORATIONS,
    "pos_emb": POS_EMBS,
    "continuous_dist": tuple(CONTINUOUS_OUTPUTS),
    "cnn": tuple(BACKBONES),
    "nonfinite_data": NONFINITE_DATA,
    "collect": COLLECT_MODES,
    "pack_windows": PACK_MODES,
    "compile_loss": COMPILE_MODES,
    "actor_encoder_grad": ACTOR_ENCODER_GRADS,
    "lr_decay": LR_DECAYS,
    "final_eval": tuple(FINAL_EVALS),
}


def gammas_of(multigammas: list[float] | None, gamma: float) -> list[float]:
    """The loss's discounts: `multigammas` (None: the loss's defaults) and the acting `gamma` last."""
    return list(DEFAULT_MULTIGAMMAS if multigammas is None else multigammas) + [gamma]


@dataclass
class TrainConfig:
    """One AMAGO training run. Units: env steps are per env unless the name says `total`."""

    # run / io
    run_name: str = "amago"
    buffer_dir: str = "runs"
    seed: int = 0
    device: str = "cpu"
    log_to_wandb: bool = False
    wandb_project: str = "torchrl_amago"
    progress_bar: bool = True
    dist_timeout_s: float = 600.0  # torchrun: a rank waiting longer than this on the others stops with an error
    # schedule
    epochs: int = 100
    timesteps_per_epoch: int = 1000
    grads_per_epoch: int = 1000
    start_learning_at_epoch: int = 0
    start_collecting_at_epoch: int = 0
    eval_interval: int = 10
    eval_timesteps: int = 1000
    eval_envs: int = 8
    ckpt_interval: int = 10
    keep_best: bool = True
    final_eval: str = "last"
    own_eval_rng: bool = False
    branch_every: int = 0
    branch_from: str | None = None
    sample_actions_train: bool = True
    sample_actions_eval: bool = True
    # envs
    parallel_envs: int = 8
    action_counts: bool = False
    # collection beside learning (trainers/collection.py, docs/scaling.md)
    collect: str = "sync"
    num_collectors: int = 1
    collector_batch_steps: int | None = None
    policy_sync_interval: int = 10
    replay_ratio: float | None = None
    collector_timeout_s: float = 120.0
    collector_address: str | None = None
    # replay
    max_seq_len: int = 128
    dset_max_size: int = 1_000_000
    traj_save_len: int | None = None
    sampling: str = "trial"
    padded_sampling: str = "none"
    trim_windows: bool = default_of(TrialWindowSampler.__init__, "trim")
    pack_windows: str = _loss("pack_windows")
    min_trials_to_learn: int = 2
    # model
    traj_encoder: str = "transformer"
    memory_size: int = 256
    memory_layers: int = 3
    n_heads: int = 8
    pos_emb: str = "fixed"
    max_time_idx: int | None = None
    dropout: float = 0.05
    tstep_hidden: int = 512
    tstep_layers: int = 2
    tstep_out: int = 256
    tstep_normalize_inputs: bool = True
    image_key: str | None = None
    cnn: str = default_of(CNNTimestepEncoder, "cnn_type")
    drqv2_aug: bool = default_of(CNNTimestepEncoder, "drqv2_aug")
    obs_keys: list[str] | None = None
    actor_hidden: int = 256
    critic_hidden: int = 256
    count_heads: bool = False
    # agent / loss
    agent_type: str = "agent"
    gamma: float = _loss("gamma")
    multigammas: list[float] | None = None
    num_critics: int = default_of(DiscreteCritic, "num_critics")
    critic_zero_init: bool | None = None
    num_critics_td: int = _loss("num_critics_td")
    online_coeff: float | None = None
    offline_coeff: float | None = None
    entropy_coeff: float = _loss("entropy_coeff")
    cql_coeff: float | None = None
    cql_ramp: tuple[float, float] | None = None
    critic_loss_weight: float = _loss("critic_loss_weight")
    reward_multiplier: float = _loss("reward_multiplier")
    popart: bool = _loss("popart")
    popart_beta: float = _loss("popart_beta")
    popart_init_nu: float = _loss("popart_init_nu")
    popart_min_sigma: float = _loss("popart_min_sigma")
    popart_min_sigma_ratio: float = _loss("popart_min_sigma_ratio")
    n_step: int = _loss("n_step")
    n_step_cut: float = _loss("n_step_cut")
    n_step_stop_explored: bool = _loss("n_step_stop_explored")
    n_step_min_gamma: float = _loss("n_step_min_gamma")
    tree_backup: bool = _loss("tree_backup")
    fbc_filter: str = _loss("fbc_filter")
    fbc_filter_kwargs: dict[str, float] | None = None
    num_actions_for_value_in_critic_loss: int = _loss("num_actions_for_value_in_critic_loss")
    num_actions_for_value_in_actor_loss: int | None = None
    use_target_actor: bool = _loss("use_target_actor")
    gumbel_temperature: float = _loss("gumbel_temperature")
    target_backbone: bool = _loss("target_backbone")
    target_backbone_min_gamma: float = _loss("target_backbone_min_gamma")
    target_backbone_all_gammas: bool = _loss("target_backbone_all_gammas")
    actor_encoder_grad: str = _loss("actor_encoder_grad")
    tau: float = DEFAULT_TAU
    target_backbone_tau: float = DEFAULT_BACKBONE_TAU
    continuous_dist: str = default_of(ActorHead, "continuous_dist")
    discrete_clip: tuple[float, float] = DEFAULT_DISCRETE_CLIP
    two_hot_bins: int = default_of(TwoHotCritic, "num_bins")
    two_hot_min_return: float = default_of(TwoHotCritic, "min_return")
    two_hot_max_return: float = default_of(TwoHotCritic, "max_return")
    # exploration
    exploration: str = "egreedy"
    eps_start: float = default_of(EpsilonGreedy, "eps_start")
    eps_end: float = default_of(EpsilonGreedy, "eps_end")
    eps_steps_anneal: int = default_of(EpsilonGreedy, "steps_anneal")
    # optimisation
    batch_size: int = 24
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 500
    lr_decay: str = "none"
    lr_final_ratio: float = 0.1
    grad_clip: float = 1.0
    l2_coeff: float = 1e-3
    mixed_precision: str = "no"
    compile_loss: str = "no"
    cuda_graph: bool = False
    num_threads: int | None = None
    # guards (trainers/guards.py)
    max_nonfinite_updates: int = 10  # this many non-finite updates in a row stop the run
    nonfinite_data: str = "error"  # NaN/inf in env or offline data: 'error' | 'drop' (offline trials only)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad flag."""
        for name, allowed in FIELD_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        positive = ("epochs", "parallel_envs", "max_seq_len", "batch_size", "memory_size", "memory_layers",
                    "dset_max_size", "num_critics", "n_step", "num_collectors", "policy_sync_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("timesteps_per_epoch", "grads_per_epoch", "eval_interval", "eval_timesteps", "ckpt_interval",
                     "branch_every", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.traj_save_len is not None and self.traj_save_len < 2:
            raise ValueError(f"--traj_save_len must be >= 2 (or unset), got {self.traj_save_len}")
        if not 0 < self.popart_min_sigma < 1e6:
            raise ValueError(f"--popart_min_sigma must be in (0, 1e6), got {self.popart_min_sigma}")
        if not 0 <= self.popart_min_sigma_ratio <= 1:
            raise ValueError(f"--popart_min_sigma_ratio must be in [0, 1], got {self.popart_min_sigma_ratio}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"--gamma must be in (0, 1), got {self.gamma}")
        if not 1 <= self.num_critics_td <= self.num_critics:
            raise ValueError(f"--num_critics_td must be in [1, num_critics={self.num_critics}], got {self.num_critics_td}")
        if self.final_eval != "last" and not (self.keep_best and self.eval_interval):
            raise ValueError(f"--final_eval {self.final_eval} evaluates the weights of the best periodic eval "
                             f"(ckpts/best.pt): it needs --keep_best and --eval_interval > 0 (got --keep_best "
                             f"{self.keep_best}, --eval_interval {self.eval_interval})")
        check_ranges(self)
        check_cql_flags(self)
        self._validate_loss_options()

    def _validate_loss_options(self) -> None:
        for name in ("num_actions_for_value_in_critic_loss", "num_actions_for_value_in_actor_loss"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.popart_beta < 1:
            raise ValueError(f"--popart_beta must be in (0, 1), got {self.popart_beta}")
        if not self.gumbel_temperature > 0:
            raise ValueError(f"--gumbel_temperature must be > 0, got {self.gumbel_temperature}")
        allowed = set(inspect.signature(FILTER_FUNCTIONS[self.fbc_filter]).parameters) - {"adv"}
        unknown = set(self.fbc_filter_kwargs or {}) - allowed
        if any(not isinstance(v, (int, float)) for v in (self.fbc_filter_kwargs or {}).values()):
            raise ValueError(f"--fbc_filter_kwargs values must be numbers, got {self.fbc_filter_kwargs}")
        if unknown:
            raise ValueError(f"--fbc_filter_kwargs: {sorted(unknown)} are not arguments of the {self.fbc_filter!r} "
                             f"filter (it takes {sorted(allowed)})")

    @property
    def gammas(self) -> list[float]:
        return gammas_of(self.multigammas, self.gamma)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


__all__ = ["TrainConfig", "config_fields"]
