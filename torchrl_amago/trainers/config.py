"""Typed training configuration: everything the original's common CLI covers, as one dataclass.

Names follow the original CLI where one exists (`--epochs`, `--timesteps_per_epoch`, `--batches_per_epoch`
is `grads_per_epoch` here, `--parallel_actors` is `parallel_envs`, `--traj_encoder`, `--memory_size`, ...).
Every field is a CLI flag of every example (see `trainers/cli.py`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TRAJ_ENCODERS = ("transformer", "gru", "lstm", "ff", "identity", "mamba")
AGENT_TYPES = ("agent", "multitask")
PRECISIONS = ("no", "bf16", "fp16")
FILTERS = ("binary", "exp", "leaky_relu")


@dataclass
class TrainConfig:
    """One AMAGO training run. Units: env steps are per env unless the name says `total`."""

    # run / io
    run_name: str = "amago"
    buffer_dir: str = "runs"  # holds <run_name>/{buffer,ckpts,logs}
    seed: int = 0
    device: str = "cpu"
    log_to_wandb: bool = False
    wandb_project: str = "torchrl_amago"
    progress_bar: bool = True
    dist_timeout_s: float = 600.0  # torchrun: a rank waiting longer than this on the others stops with an error
    # schedule
    epochs: int = 100
    timesteps_per_epoch: int = 1000  # env steps per parallel env per epoch
    grads_per_epoch: int = 1000  # gradient updates per epoch
    start_learning_at_epoch: int = 0
    start_collecting_at_epoch: int = 0
    eval_interval: int = 10  # epochs; 0 disables
    eval_timesteps: int = 1000  # env steps per eval env per evaluation
    eval_envs: int = 8
    ckpt_interval: int = 10  # epochs; 0 disables periodic checkpoints (the latest one is always written)
    sample_actions_train: bool = True
    sample_actions_eval: bool = True
    # envs
    parallel_envs: int = 8
    # replay
    max_seq_len: int = 128
    dset_max_size: int = 1_000_000  # replay capacity in timesteps (the original counts files)
    traj_save_len: int | None = None  # store trials as snippets of at most this many steps (None: whole)
    sampling: str = "trial"  # 'trial' (original: uniform over trials) | 'timestep'
    padded_sampling: str = "none"  # 'none' | 'right'
    min_trials_to_learn: int = 2
    # model
    traj_encoder: str = "transformer"
    memory_size: int = 256  # d_model (transformer / ff / mamba) or hidden size (gru / lstm)
    memory_layers: int = 3
    n_heads: int = 8
    pos_emb: str = "fixed"
    max_time_idx: int | None = None  # required by pos_emb='learnable'
    dropout: float = 0.05
    tstep_hidden: int = 512
    tstep_layers: int = 2
    tstep_out: int = 256
    tstep_normalize_inputs: bool = True
    obs_keys: list[str] | None = None
    actor_hidden: int = 256
    critic_hidden: int = 256
    # agent / loss
    agent_type: str = "agent"
    gamma: float = 0.999
    multigammas: list[float] | None = None  # None -> the original's defaults
    num_critics: int = 4
    num_critics_td: int = 2
    online_coeff: float | None = None  # None -> agent-type default
    offline_coeff: float | None = None
    critic_loss_weight: float = 10.0
    reward_multiplier: float = 10.0
    popart_min_sigma: float = 1e-4  # default inert (the original's maths); ~1 guards near-constant-return gammas
    n_step: int = 1
    fbc_filter: str = "binary"
    tau: float = 0.003
    continuous_dist: str = "tanh_gaussian"
    discrete_clip: tuple[float, float] = (1e-3, 0.99)
    two_hot_bins: int = 128
    two_hot_min_return: float = -1e5
    two_hot_max_return: float = 1e5
    # exploration
    exploration: str = "egreedy"  # 'egreedy' | 'bilevel' | 'none'
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_steps_anneal: int = 1_000_000
    # optimisation
    batch_size: int = 24
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 500
    grad_clip: float = 1.0
    l2_coeff: float = 1e-3
    mixed_precision: str = "no"
    num_threads: int | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad flag."""
        choices = {
            "traj_encoder": TRAJ_ENCODERS,
            "agent_type": AGENT_TYPES,
            "mixed_precision": PRECISIONS,
            "fbc_filter": FILTERS,
            "sampling": ("trial", "timestep"),
            "padded_sampling": ("none", "right"),
            "exploration": ("egreedy", "bilevel", "none"),
            "pos_emb": ("fixed", "learnable", "rope"),
            "continuous_dist": ("tanh_gaussian", "beta"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        positive = ("epochs", "parallel_envs", "max_seq_len", "batch_size", "memory_size", "memory_layers",
                    "dset_max_size", "num_critics", "n_step")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("timesteps_per_epoch", "grads_per_epoch", "eval_interval", "eval_timesteps", "ckpt_interval",
                     "lr_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.traj_save_len is not None and self.traj_save_len < 2:
            raise ValueError(f"--traj_save_len must be >= 2 (or unset), got {self.traj_save_len}")
        if not 0 < self.popart_min_sigma < 1e6:
            raise ValueError(f"--popart_min_sigma must be in (0, 1e6), got {self.popart_min_sigma}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"--gamma must be in (0, 1), got {self.gamma}")
        if not 1 <= self.num_critics_td <= self.num_critics:
            raise ValueError(f"--num_critics_td must be in [1, num_critics={self.num_critics}], got {self.num_critics_td}")

    @property
    def gammas(self) -> list[float]:
        base = [0.1, 0.9, 0.95, 0.97, 0.99, 0.995] if self.multigammas is None else list(self.multigammas)
        return base + [self.gamma]

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


__all__ = ["TrainConfig", "config_fields"]
