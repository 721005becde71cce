"""`TrainConfig`: one AMAGO training run, every field a flag declared once with its default, help, section,
choices and check (`opt(...)`). No torch import."""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

#: `--help` shows the sections in this order, each as one group.
SECTIONS = {
    "run": "run: where it is written, how long it trains, when it evaluates",
    "env": "env: the envs the run steps",
    "model": "model: timestep encoder, trajectory encoder (the memory), heads",
    "loss": "loss: the AMAGO objective (AMAGOLoss)",
    "replay": "replay: what is stored and how training windows are drawn",
    "collection": "collection: how actions are chosen while collecting and evaluating",
    "optim": "optim: the optimizer and its schedule",
    "scale": "scale: devices, threads, collection beside learning, compilation",
}

#: Built-in `--traj_encoder` names; plugins register more (`modules.trajectory.register_trajectory_encoder`).
BUILTIN_TRAJ_ENCODERS = ("transformer", "gru", "lstm", "mamba", "ff")
FINAL_EVALS = ("last", "best", "both")
COLLECT_MODES = ("sync", "async", "distributed")
LR_DECAYS = ("none", "cosine", "linear")
EVAL_ONLY = ("best", "latest")
LOGGERS = ("csv", "tensorboard", "wandb")  # TorchRL's, through torchrl.record.loggers.get_logger
#: A run folder's readable files: its identity and settings (an example's own flags), and its resolved config.
IDENTITY_FILE, CONFIG_FILE = "run.json", "config.json"
CONFIG_FORMAT = "torchrl_amago.config.v1"


def at_least(lo) -> Callable[[Any], Optional[str]]:
    """A check: the value is >= `lo` (a check returns what is wrong, or None)."""
    return lambda v: None if v >= lo else f"must be >= {lo}"


def between(lo, hi, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], Optional[str]]:
    """A check: the value is in [lo, hi] (`lo_open` / `hi_open`: the bound excluded)."""
    def check(v):
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        return None if ok else f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return check


def positive(v) -> Optional[str]:
    """A check: the value is > 0."""
    return None if v > 0 else "must be > 0"


def folder_name(v) -> Optional[str]:
    """A check: a run's folder name, not a path."""
    if not v or v in (".", "..") or any(c in v for c in "/\\\0"):
        return "must be a folder name (not empty, '.' or '..', no '/'): the run's folder is <buffer_dir>/<run_name>"
    return None


def each(check) -> Callable[[Any], Optional[str]]:
    return lambda values: next((f"{p} (each value)" for p in map(check, values) if p), None)


def ordered_pair(lo, hi) -> Callable[[Any], Optional[str]]:
    return lambda v: None if lo <= v[0] <= v[1] <= hi else f"must be two values with {lo} <= FIRST <= SECOND <= {hi}"


def opt(default, help: str, *, section: str, choices=None, check=None, metavar=None):
    """One config field: its default, `--help` text, section, allowed values and check."""
    meta = {"help": help, "section": section, "choices": choices, "check": check, "metavar": metavar}
    return field(default=default, metadata=meta)


run, env, model, loss, replay, collection, optim, scale = (functools.partial(opt, section=s) for s in SECTIONS)


@dataclass
class TrainConfig:
    """One AMAGO training run. Env steps are per env unless the name says otherwise."""

    run_name: str = run("amago", "name of the run: its folder is <buffer_dir>/<run_name> (a name, not a path)",
                        check=folder_name)
    buffer_dir: str = run("runs", "folder that holds the runs: <buffer_dir>/<run_name>/{buffer,ckpts,logs}")
    seed: int = run(0, "seed of torch (every weight initialisation), the replay and the envs",
                    check=between(0, 2**32 - 1))
    epochs: int = run(100, "training epochs (collect, update, eval, checkpoint)", check=at_least(1))
    timesteps_per_epoch: int = run(1000, "env steps per parallel env per epoch", check=at_least(0))
    grads_per_epoch: int = run(1000, "gradient updates per epoch (the original's --batches_per_epoch)",
                               check=at_least(0))
    eval_interval: int = run(10, "evaluate every this many epochs (0: never); the weights of the best periodic eval "
                                 "are kept in <run>/ckpts/best.pt", check=at_least(0))
    eval_timesteps: int = run(1000, "env steps per eval env per evaluation", check=at_least(1))
    final_eval: str = run("last", "weights of the final evaluation: last (the run's last weights), best "
                                  "(ckpts/best.pt, the best periodic eval's) or both (last, then best)",
                          choices=FINAL_EVALS)
    ckpt_interval: int = run(10, "also keep a checkpoint every this many epochs (0: only the latest one, which is "
                                 "always written)", check=at_least(0))
    start_learning_at_epoch: int = run(0, "first epoch with gradient updates", check=at_least(0))
    start_collecting_at_epoch: int = run(0, "first epoch that collects env data (before it: learn from offline "
                                            "data only)", check=at_least(0))
    eval_only: Optional[str] = run(None, "evaluate the run's saved weights, best (ckpts/best.pt) or latest "
                                         "(ckpts/latest.pt), print the summary line and stop: no training, nothing "
                                         "written; every flag you do not type is the run's (unset: train)",
                                   choices=EVAL_ONLY)
    progress_bar: bool = run(True, "show a progress bar per epoch")
    logger: Optional[str] = run(None, "also log through TorchRL's logger of this kind in <run>/logs: csv (its CSV "
                                      "tree), tensorboard (pip install tensorboard) or wandb (pip install wandb; "
                                      "project: $WANDB_PROJECT). Unset: logs/metrics.csv and the figures only",
                                choices=LOGGERS)
    parallel_envs: int = env(8, "batched training envs (the original's --parallel_actors)", check=at_least(1))
    eval_envs: int = env(8, "batched eval envs", check=at_least(1))
    obs_keys: Optional[list[str]] = env(None, "observation keys the MLP timestep encoder reads (unset: all of the "
                                              "env's)")
    image_key: Optional[str] = env(None, "observation key of an image: the timestep encoder is then a CNN on it "
                                         "(unset: an MLP)")
    nonfinite_data: str = env("error", "NaN/inf in offline trials: error (name the key) or drop (drop those trials, "
                                       "counted); NaN/inf in env data is always an error", choices=("error", "drop"))
    traj_encoder: str = model("transformer", "trajectory encoder, the memory (plugins may register more names)",
                              choices=BUILTIN_TRAJ_ENCODERS)
    memory_size: int = model(256, "width of the trajectory encoder (d_model / hidden size)", check=at_least(1))
    memory_layers: int = model(3, "depth of the trajectory encoder", check=at_least(1))
    n_heads: int = model(8, "attention heads of the transformer (--memory_size must be a multiple)", check=at_least(1))
    pos_emb: str = model("fixed", "transformer positions: fixed sinusoid, learnable table (needs --max_time_idx) or "
                                  "rope", choices=("fixed", "learnable", "rope"))
    max_time_idx: Optional[int] = model(None, "largest time_idx + 1 of the learnable position table", check=at_least(1))
    dropout: float = model(0.05, "transformer dropout (feed-forward and embedding)", check=between(0, 1, hi_open=True))
    tstep_hidden: int = model(512, "width of the timestep encoder's MLP (CNN encoder: image feature size)",
                              check=at_least(1))
    tstep_layers: int = model(2, "layers of the timestep encoder's MLP", check=at_least(1))
    tstep_out: int = model(256, "output width of the timestep encoder", check=at_least(1))
    tstep_normalize_inputs: bool = model(True, "normalise the MLP timestep encoder's inputs with running statistics")
    cnn: str = model("nature", "CNN of the image timestep encoder (with --image_key)",
                     choices=("nature", "drq", "gridworld", "impala"))
    drqv2_aug: bool = model(False, "DrQ-v2 random-shift augmentation of training images (with --image_key)")
    actor_hidden: int = model(256, "width of the actor head", check=at_least(1))
    critic_hidden: int = model(256, "width of the critic heads", check=at_least(1))
    count_heads: bool = model(False, "discrete actions: the actor's and critics' output for each action also reads how "
                                     "often the trial took it, through weights shared by all actions "
                                     "(modules.count_heads)")
    continuous_dist: str = model("tanh_gaussian", "policy distribution for continuous actions",
                                 choices=("tanh_gaussian", "beta"))
    discrete_clip: tuple[float, float] = model((1e-3, 0.99), "LOW HIGH clip of the discrete policy's probabilities "
                                                             "(the loss softens buffer actions with it)",
                                               check=ordered_pair(0.0, 1.0))
    agent_type: str = loss("agent", "agent (AMAGO: scalar critics, DPG + filtered BC) or multitask (AMAGO-2: two-hot "
                                    "critic, filtered BC only)", choices=("agent", "multitask"))
    gamma: float = loss(0.999, "the acting discount (the last of the trained gammas)",
                        check=between(0, 1, lo_open=True, hi_open=True))
    multigammas: Optional[list[float]] = loss(None, "auxiliary discounts trained beside --gamma (unset: the "
                                                    "original's, objectives.DEFAULT_MULTIGAMMAS)",
                                              check=each(between(0, 1, hi_open=True)))
    num_critics: int = loss(4, "critic ensemble size", check=at_least(1))
    online_coeff: Optional[float] = loss(None, "weight of the DPG actor term (unset: 1 for agent, 0 for multitask "
                                               "and multi-binary actions)", check=at_least(0))
    offline_coeff: Optional[float] = loss(None, "weight of the filtered-BC actor term (unset: 0.1 for agent, 1 for "
                                                "multitask)", check=at_least(0))
    fbc_filter: str = loss("binary", "advantage filter f(A) of the filtered-BC term",
                           choices=("binary", "exp", "leaky_relu"))
    entropy_coeff: float = loss(0.0, "weight of a policy-entropy bonus in the actor loss, discrete actions only "
                                     "(0: off, the original's)", check=at_least(0))
    cql_coeff: float = loss(0.0, "weight of a conservative term logsumexp_a Q(s, a) - Q(s, a_buffer) in the critic "
                                 "loss, per-action critics only (CQL; 0: off, the original's)", check=at_least(0))
    cql_ramp: Optional[tuple[float, float]] = loss(None, "START END fractions of the run's updates: the conservative "
                                                         "term is off before START and reaches --cql_coeff at END, "
                                                         "linearly (unset: full weight from the first update)",
                                                   check=ordered_pair(0.0, 1.0), metavar=("START", "END"))
    reward_multiplier: float = loss(10.0, "rewards are scaled by this inside the loss",
                                    check=between(0, 1e6, lo_open=True))
    popart: bool = loss(True, "PopArt-normalise the critic targets (two-hot critics use its statistics only for the "
                              "DPG term)")
    n_step: int = loss(1, "n-step TD returns (they stop at terminated and at padding; truncated bootstraps)",
                       check=at_least(1))
    n_step_cut: float = loss(0.0, "an n-step return also stops before a buffer action that the target policy rates "
                                  "below this x its most likely action's probability (0: never; 1: at any non-greedy "
                                  "action, Watkins' Q(lambda); continuous actions: 0 or 1)", check=between(0, 1))
    target_encoders: bool = loss(False, "TD targets read s_{t+1} from a Polyak-averaged copy of both encoders (one more "
                                        "encoder pass per update, not in the original; trainers.LONG_HORIZON_PRESET)")
    tau: float = loss(0.003, "Polyak factor of the target actor and critics", check=between(0, 1, lo_open=True))
    two_hot_bins: int = loss(128, "bins of the two-hot critic (multitask)", check=at_least(2))
    two_hot_range: tuple[float, float] = loss((-1e5, 1e5), "LOW HIGH returns of the two-hot critic's first and last "
                                                           "bins (multitask)",
                                              check=lambda v: None if v[0] < v[1] else "must be LOW < HIGH")
    max_seq_len: int = replay(128, "context length: steps per training window and the acting policy's context",
                              check=at_least(1))
    dset_max_size: int = replay(1_000_000, "replay capacity in env steps, FIFO by whole trials",
                                check=between(1, 2**32 - 1))
    traj_save_len: Optional[int] = replay(None, "store long trials as snippets of at most this many steps, so learning "
                                                "starts before a long episode ends (unset: whole trials)",
                                          check=at_least(2))
    batch_size: int = replay(24, "windows per gradient update", check=at_least(1))
    padded_sampling: str = replay("none", "none: windows start in [0, L-T]; right: in [0, L-1] (windows may run off "
                                          "the end of a trial)", choices=("none", "right"))
    trim_windows: bool = replay(True, "cut each batch to its longest valid window (--no-trim_windows: always "
                                      "--max_seq_len steps, fixed shapes for --compile_loss / --cuda_graph)")
    min_trials_to_learn: int = replay(2, "finished trials in the replay before the first update", check=at_least(1))
    exploration: str = collection("egreedy", "egreedy (annealed epsilon), bilevel (also decays within each trial) or "
                                             "none", choices=("egreedy", "bilevel", "none"))
    eps_start: float = collection(1.0, "epsilon at the start of training (bilevel: at the start of a trial)",
                                  check=between(0, 1))
    eps_end: float = collection(0.05, "epsilon after --eps_steps_anneal", check=between(0, 1))
    eps_steps_anneal: int = collection(1_000_000, "batched env steps over which epsilon anneals", check=at_least(1))
    sample_actions_train: bool = collection(True, "sample actions while collecting (else the policy's mode)")
    sample_actions_eval: bool = collection(True, "sample actions while evaluating (else the policy's mode)")
    learning_rate: float = optim(1e-4, "AdamW learning rate", check=positive)
    lr_warmup_steps: int = optim(500, "linear learning-rate warm-up, in updates", check=at_least(0))
    lr_decay: str = optim("none", "after the warm-up, bring the learning rate down to a tenth of it by the run's last "
                                  "update (cosine or linear), or keep it (none, the original's)", choices=LR_DECAYS)
    grad_clip: float = optim(1.0, "global gradient-norm clip", check=positive)
    l2_coeff: float = optim(1e-3, "AdamW weight decay", check=at_least(0))
    device: str = scale("cpu", "learner device, e.g. cpu or cuda")
    num_threads: Optional[int] = scale(1, "torch CPU threads of the learner (one: runs that share a CPU slow down in "
                                          "proportion; unset: torch's own, for one run on an idle machine)",
                                       check=at_least(1))
    collect: str = scale("sync", "sync: collect an epoch, then update; async: TorchRL MultiAsyncCollector workers "
                                 "collect while the learner updates; distributed: workers on other machines "
                                 "(docs/scaling.md)", choices=COLLECT_MODES)
    num_collectors: int = scale(1, "collector worker processes (async / distributed)", check=at_least(1))
    policy_sync_interval: int = scale(10, "async / distributed: push the acting weights to the workers every this many "
                                          "updates", check=at_least(1))
    replay_ratio: Optional[float] = scale(None, "async / distributed: updates per stored env step (unset: the sync "
                                                "loop's, grads_per_epoch / (parallel_envs x timesteps_per_epoch))",
                                          check=positive)
    collector_address: Optional[str] = scale(None, "distributed: address of the cluster of the collector workers")
    timeout_s: float = scale(600.0, "a collector worker or torchrun rank silent for this long stops the run with an "
                                    "error", check=positive)
    mixed_precision: str = scale("auto", "autocast dtype of the learner: auto: bf16 where the device computes it "
                                         "natively (a CPU with AVX-512 BF16 or AMX, a GPU with bf16), else fp32; "
                                         "no (fp32), bf16, fp16; the run's summary says which it used",
                                 choices=("no", "auto", "bf16", "fp16"))
    compile_loss: str = scale("no", "torch.compile the loss forward and backward with this mode (needs "
                                    "--no-trim_windows)", choices=("no", "default", "reduce-overhead", "max-autotune"))
    cuda_graph: bool = scale(False, "capture the whole update as CUDA graphs (needs --device cuda and "
                                    "--no-trim_windows; not with --compile_loss or torchrun)")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the flag: types, choices and ranges of every field, then the rules between flags."""
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
        if self.traj_encoder not in BUILTIN_TRAJ_ENCODERS:  # a plugin's name: the registry is the authority
            from ..modules.trajectory.registry import trajectory_encoder_names

            if self.traj_encoder not in trajectory_encoder_names():
                raise ValueError(f"--traj_encoder={self.traj_encoder!r} is not one of {trajectory_encoder_names()}")
        if self.pos_emb == "learnable" and self.max_time_idx is None:
            raise ValueError("--pos_emb learnable needs --max_time_idx (the longest trial length in steps)")
        if self.memory_size % self.n_heads and self.traj_encoder == "transformer":
            raise ValueError(f"--memory_size={self.memory_size} must be a multiple of --n_heads={self.n_heads}")
        if self.grads_per_epoch > 0 and self.start_learning_at_epoch >= self.epochs:
            raise ValueError(f"--start_learning_at_epoch={self.start_learning_at_epoch} is not below "
                             f"--epochs={self.epochs}: the run would make no gradient step")
        per_epoch = self.parallel_envs * self.timesteps_per_epoch
        if per_epoch > self.dset_max_size:
            raise ValueError(f"--dset_max_size={self.dset_max_size} is smaller than one epoch of collection "
                             f"(--parallel_envs x --timesteps_per_epoch = {per_epoch} steps)")
        if self.max_seq_len > self.dset_max_size:
            raise ValueError(f"--max_seq_len={self.max_seq_len} is longer than the replay (--dset_max_size="
                             f"{self.dset_max_size}): no window could ever be filled")
        if self.traj_save_len is not None and self.traj_save_len > self.dset_max_size:
            raise ValueError(f"--traj_save_len={self.traj_save_len} exceeds --dset_max_size={self.dset_max_size}")
        if self.final_eval != "last" and not self.eval_interval:
            raise ValueError(f"--final_eval {self.final_eval} evaluates the weights of the best periodic eval "
                             f"(ckpts/best.pt): it needs --eval_interval > 0")

    @property
    def gammas(self) -> list[float]:
        """The loss's discounts: `multigammas` (default `objectives.DEFAULT_MULTIGAMMAS`) and the acting `gamma` last."""
        return gammas_of(self.multigammas, self.gamma)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config of `to_dict()`'s output, e.g. a run's ``config.json`` (lists become the tuples of tuple
        fields); an unknown name is a ValueError naming it."""
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        tuples = {f.name for f in dataclasses.fields(cls) if _value_type(f)[1] == "tuple"}
        return cls(**{k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in values.items()})

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def gammas_of(multigammas, gamma: float) -> list[float]:
    """The loss's discounts: `multigammas` (None: `objectives.DEFAULT_MULTIGAMMAS`) and the acting `gamma` last."""
    if multigammas is None:
        from ..objectives.amago_loss import DEFAULT_MULTIGAMMAS as multigammas
    return list(multigammas) + [gamma]


def _value_type(f: dataclasses.Field):
    """(base type, container) of a field's annotation: `Optional[list[float]]` -> (float, list)."""
    text = f.type.replace("Optional[", "").rstrip("]") if f.type.startswith("Optional[") else f.type
    for container in ("list", "tuple"):
        if text.startswith(container + "["):
            return {"float": float, "str": str, "int": int}[text[len(container) + 1:].split(",")[0].strip(" ]")], \
                container
    return {"str": str, "int": int, "float": float, "bool": bool}[text], None


def _type_ok(value, tp) -> bool:
    if tp is bool or isinstance(value, bool):
        return tp is bool and isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, tp)


def check_field(f: dataclasses.Field, value) -> None:
    """One field's value against its declaration: type (floats finite), choices, range check."""
    flag = f"--{f.name}"
    if value is None:
        if f.type.startswith("Optional["):
            return
        raise ValueError(f"{flag} must be set (got None)")
    tp, container = _value_type(f)
    values = list(value) if container and isinstance(value, (list, tuple)) else None
    if container and (values is None or not all(_type_ok(v, tp) for v in values)):
        raise ValueError(f"{flag} must be a {container} of {'finite ' if tp is float else ''}{tp.__name__} values, "
                         f"got {value!r}")
    if container == "tuple" and len(values) != len(f.default or (0, 0)):
        raise ValueError(f"{flag} takes {len(f.default or (0, 0))} values, got {value!r}")
    if not container and not _type_ok(value, tp):
        kind = {float: "a finite number", int: "an integer", bool: "True or False", str: "a string"}[tp]
        raise ValueError(f"{flag} must be {kind}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices and f.name != "traj_encoder":
        raise ValueError(f"{flag}={value!r} is not one of {list(choices)}")
    check = f.metadata.get("check")
    if check is not None and (problem := check(value)):
        raise ValueError(f"{flag} {problem}, got {value!r}")


#: Flags retired in this release: using one is an error that says what to do instead (kept for one release; the
#: names retired before are listed in CHANGELOG.md).
RETIRED = {
    "wandb_project": "use --logger wandb (the project: $WANDB_PROJECT, wandb's own variable)",
}


def retired_error(name: str) -> str:
    return f"--{name} was retired: {RETIRED[name]}"


def _refuse_retired(init):
    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        old = sorted(set(kwargs) & set(RETIRED))
        if old:
            raise TypeError("; ".join(f"TrainConfig({name}=...) was retired: {RETIRED[name]}" for name in old))
        init(self, *args, **kwargs)
    return checked_init


TrainConfig.__init__ = _refuse_retired(TrainConfig.__init__)


def field_default(name: str):
    """`TrainConfig`'s default of the field `name`."""
    return TrainConfig.__dataclass_fields__[name].default


def sections() -> dict[str, list[dataclasses.Field]]:
    """The fields of each section, in `SECTIONS` order."""
    out: dict[str, list] = {s: [] for s in SECTIONS}
    for f in dataclasses.fields(TrainConfig):
        out[f.metadata["section"]].append(f)
    return out
