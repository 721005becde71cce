"""Named sets of `TrainConfig` defaults (why: docs/design_decisions.md), and shared derived defaults."""
from __future__ import annotations

from fractions import Fraction

from .cli import Derived
from .config import field_default


def share_of_run(share: float | Fraction) -> Derived:
    """`Derived` default: `share` of epochs x timesteps_per_epoch, rounded down."""
    f = Fraction(share).limit_denominator(1000)
    if not 0 < f <= 1:
        raise ValueError(f"share_of_run needs a share in (0, 1], got {share}")
    return Derived(lambda c: c.epochs * c.timesteps_per_epoch * f.numerator // f.denominator,
                   f"{f} x epochs x timesteps_per_epoch")


#: The conservative term's weight wherever a preset turns it on.
CQL_COEFF = 0.1

#: The CPU-sized setting most examples start from: small widths, no periodic checkpoints, epsilon annealed over the
#: first half of the run.
CPU_PRESET = dict(
    ckpt_interval=0, tstep_layers=2, tstep_hidden=128, tstep_out=64, memory_size=64, memory_layers=2,
    n_heads=4, actor_hidden=128, critic_hidden=128, learning_rate=3e-4, lr_warmup_steps=200, dset_max_size=200_000,
    eps_steps_anneal=share_of_run(Fraction(1, 2)))


def cpu_preset(**overrides) -> dict:
    """`CPU_PRESET` with an example's own defaults on top (a dict for `parse_config(defaults=...)`)."""
    return {**CPU_PRESET, **overrides}


#: From this many discrete actions the plain agent collapses onto a few and repeats them.
MANY_ACTIONS = 32
#: For many discrete actions: count heads, an entropy bonus, the policy's mode at eval and a cosine learning-rate decay.
MANY_ACTION_PRESET = dict(count_heads=True, entropy_coeff=0.1, sample_actions_eval=False, lr_decay="cosine")


def many_action_preset(num_actions: int | None) -> dict:
    """`MANY_ACTION_PRESET` for `num_actions >= MANY_ACTIONS` discrete actions, else {} (None: continuous actions)."""
    return dict(MANY_ACTION_PRESET) if num_actions is not None and num_actions >= MANY_ACTIONS else {}


#: For fewer than `MANY_ACTIONS` discrete actions collected by sampling the policy: the conservative critic term.
SAMPLED_DISCRETE_PRESET = dict(cql_coeff=CQL_COEFF)


def sampled_discrete_preset(num_actions: int | None) -> dict:
    """`SAMPLED_DISCRETE_PRESET` below `MANY_ACTIONS` discrete actions, else {}."""
    return dict(SAMPLED_DISCRETE_PRESET) if num_actions is not None and num_actions < MANY_ACTIONS else {}


#: Credit assignment over thousands of steps: TD targets from a Polyak-averaged copy of both encoders and the
#: conservative critic term ramped in from a tenth of the run (example 04).
LONG_HORIZON_PRESET = dict(target_encoders=True, cql_coeff=CQL_COEFF, cql_ramp=(0.1, 1.0))


def action_presets(num_actions: int | None) -> dict:
    """`sampled_discrete_preset` and `many_action_preset` for a task with `num_actions` discrete actions."""
    return {**sampled_discrete_preset(num_actions), **many_action_preset(num_actions)}


#: What `action_presets` decides, as `--help` shows it.
ACTION_PRESETS_HELP = {
    "cql_coeff": f"{CQL_COEFF} below {MANY_ACTIONS} discrete actions (sampled_discrete_preset), else 0",
    "count_heads": f"True from {MANY_ACTIONS} discrete actions (many_action_preset), else False",
    "entropy_coeff": f"0.1 from {MANY_ACTIONS} discrete actions, else 0",
    "lr_decay": f"cosine from {MANY_ACTIONS} discrete actions, else none",
    "sample_actions_eval": f"False from {MANY_ACTIONS} discrete actions, else True"}


def derived_from(fn, texts: dict[str, str]) -> dict[str, Derived]:
    """`Derived` defaults (field -> `--help` text) from `fn(namespace)`, once per parse; TrainConfig's where absent."""
    seen: dict = {}

    def value(ns, name):
        if seen.get("ns") is not ns:
            seen.update(ns=ns, values=fn(ns))
        return seen["values"].get(name, field_default(name))

    return {name: Derived(lambda ns, name=name: value(ns, name), text) for name, text in texts.items()}
