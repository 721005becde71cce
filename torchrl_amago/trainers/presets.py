"""Named sets of `TrainConfig` defaults, and the derived defaults the examples share.

`cpu_preset(**overrides)` is the CPU-sized setting most examples start from (measured on 2 CPU cores; each
example overrides what its domain needs). `many_action_preset(num_actions)` is what tasks with many discrete actions
add to it, `sampled_discrete_preset(num_actions)` what tasks with fewer discrete actions, collected by sampling the
policy, add, and `LONG_HORIZON_PRESET` what credit assignment over thousands of steps adds (example 04).
`share_of_run(f)` is a `Derived` default: f x epochs x timesteps_per_epoch, resolved after parsing, so `--epochs 100`
stretches the exploration schedule with the run. Why each preset holds what it holds: docs/design_decisions.md.
"""
from __future__ import annotations

from fractions import Fraction

from .cli import Derived
from .config import field_default


def share_of_run(share: float | Fraction) -> Derived:
    """`Derived` default: `share` of the run's batched env steps (epochs x timesteps_per_epoch), rounded down."""
    f = Fraction(share).limit_denominator(1000)
    if not 0 < f <= 1:
        raise ValueError(f"share_of_run needs a share in (0, 1], got {share}")
    return Derived(lambda c: c.epochs * c.timesteps_per_epoch * f.numerator // f.denominator,
                   f"{f} x epochs x timesteps_per_epoch")


#: The conservative term's weight wherever a preset turns it on.
CQL_COEFF = 0.1

#: Small widths, one thread, no periodic checkpoints, epsilon annealed over the first half of the run.
CPU_PRESET = dict(
    ckpt_interval=0, tstep_layers=2, tstep_hidden=128, tstep_out=64, memory_size=64, memory_layers=2,
    n_heads=4, actor_hidden=128, critic_hidden=128, learning_rate=3e-4, lr_warmup_steps=200, dset_max_size=200_000,
    eps_steps_anneal=share_of_run(Fraction(1, 2)))


def cpu_preset(**overrides) -> dict:
    """`CPU_PRESET` with an example's own defaults on top (a dict for `parse_config(defaults=...)`)."""
    return {**CPU_PRESET, **overrides}


#: From this many discrete actions the plain agent collapses onto a few and repeats them (the no-repeat probe:
#: it learns 8 and 16 actions, barely 32, not 64; docs/results/ablations/no_repeat.md).
MANY_ACTIONS = 32
#: Heads that read each action's count in the trial, an entropy bonus that keeps the policy from collapsing while
#: they learn, the policy's mode at eval (the bonus leaves the sampled policy noisy) and a learning rate that decays
#: along a cosine (late updates take small steps, so the last policy keeps what the run found); measured on POPGym
#: (docs/results/popgym_campaign.md).
MANY_ACTION_PRESET = dict(count_heads=True, entropy_coeff=0.1, sample_actions_eval=False, lr_decay="cosine")


def many_action_preset(num_actions: int | None) -> dict:
    """`MANY_ACTION_PRESET` for `num_actions >= MANY_ACTIONS` discrete actions, else {} (None: continuous actions)."""
    return dict(MANY_ACTION_PRESET) if num_actions is not None and num_actions >= MANY_ACTIONS else {}


#: The conservative critic term at full weight from the first update, for discrete actions collected by sampling the
#: policy (`--sample_actions_train`, the trainer's default): the replay holds every action, so the term cannot lock the
#: first policy in as it can under greedy collection. On the POPGym campaign it lowers none of the five tasks with
#: fewer than `MANY_ACTIONS` actions and raises four; beside `MANY_ACTION_PRESET` it ended BattleshipEasy below random
#: on 1 of 3 seeds, so it stops where that preset starts (docs/results/popgym_campaign.md).
SAMPLED_DISCRETE_PRESET = dict(cql_coeff=CQL_COEFF)


def sampled_discrete_preset(num_actions: int | None) -> dict:
    """`SAMPLED_DISCRETE_PRESET` for fewer than `MANY_ACTIONS` discrete actions, else {} (None: continuous actions,
    where the term does not apply)."""
    return dict(SAMPLED_DISCRETE_PRESET) if num_actions is not None and num_actions < MANY_ACTIONS else {}


#: Credit assignment over thousands of steps (T-Maze's acting gamma 0.9999): TD targets read a Polyak-averaged copy of
#: both encoders, whose 1-step targets do not jump with the online encoders, and the conservative critic term ramps in
#: from a tenth of the run, so a solved corridor is not given up (docs/design_decisions.md; example 04 applies it).
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
    """`Derived` defaults of the fields in `texts` (field -> what `--help` shows): `fn(namespace)[field]`, computed
    once per parse, or TrainConfig's default where `fn` leaves the field out (e.g. settings read from the env a flag
    names, without importing it for `--help`)."""
    seen: dict = {}

    def value(ns, name):
        if seen.get("ns") is not ns:
            seen.update(ns=ns, values=fn(ns))
        return seen["values"].get(name, field_default(name))

    return {name: Derived(lambda ns, name=name: value(ns, name), text) for name, text in texts.items()}
