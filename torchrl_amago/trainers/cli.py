"""The common CLI of every example: one flag per `TrainConfig` field, plus example-specific flags.

`parse_config(defaults=..., extra=...)` gives every example the same `--help`, with the example's own
defaults (e.g. T-Maze sets `max_seq_len` from its horizon) and its domain flags added by `extra`.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable

from .config import TrainConfig

_DOC_HELP = {
    "run_name": "name of the run (folder under --buffer_dir)",
    "buffer_dir": "root folder for replay memmaps, checkpoints and logs",
    "timesteps_per_epoch": "env steps per parallel env per epoch",
    "grads_per_epoch": "gradient updates per epoch (the original's --batches_per_epoch)",
    "parallel_envs": "number of batched training envs (the original's --parallel_actors)",
    "dset_max_size": "replay capacity in timesteps (FIFO)",
    "traj_save_len": "store long trials as non-overlapping snippets of at most this many steps, so learning "
                     "starts before a long episode ends (default: whole trials)",
    "memory_size": "width of the trajectory encoder (d_model / hidden size)",
    "memory_layers": "depth of the trajectory encoder",
    "agent_type": "'agent' (AMAGO) or 'multitask' (AMAGO-2: two-hot critic, filtered BC)",
    "eval_timesteps": "env steps per eval env per evaluation",
    "mixed_precision": "autocast dtype for the learner: no | bf16 | fp16",
    "max_nonfinite_updates": "stop the run after this many updates in a row skipped for NaN/inf (batch, loss or "
                             "gradient)",
    "nonfinite_data": "NaN/inf in offline trials: 'error' (name the key) or 'drop' (drop those trials, counted); "
                      "env data with NaN/inf is always an error",
    "popart_min_sigma": "floor of PopArt's sigma in scaled-reward units; ~1 stops a gamma with near-constant "
                        "returns (e.g. 0.1 under a constant reward) from dominating the clipped gradient",
}


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, default: Any) -> None:
    hints = typing.get_type_hints(TrainConfig)
    tp = hints[f.name]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    optional = origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    help_ = _DOC_HELP.get(f.name, "") + f" (default: {default})"
    flag = f"--{f.name}"
    if tp is bool:
        parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction, help=help_)
    elif origin is list:
        parser.add_argument(flag, default=default, nargs="+", type=args[0], help=help_)
    elif origin is tuple:
        parser.add_argument(flag, default=default, nargs=len(args), type=args[0], help=help_)
    else:
        parser.add_argument(flag, default=default, type=tp, help=help_)


def build_parser(description: str = "", defaults: dict | None = None,
                 extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    defaults = defaults or {}
    unknown = set(defaults) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown TrainConfig defaults: {sorted(unknown)}")
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if extra is not None:
        group = parser.add_argument_group("example options")
        extra(group)
    group = parser.add_argument_group("training options (common to every example)")
    base = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        _add_field(group, f, defaults.get(f.name, getattr(base, f.name)))
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    if isinstance(kw.get("discrete_clip"), list):
        kw["discrete_clip"] = tuple(kw["discrete_clip"])
    return TrainConfig(**kw)


def example_args(extra: Callable[[argparse.ArgumentParser], None], argv: list[str] | None = None
                 ) -> argparse.Namespace:
    """The example's own flags only (unknown flags ignored), for values the TrainConfig defaults depend on,
    e.g. T-Maze's `max_seq_len = horizon + 1`. `--help` is left to `parse_config`."""
    pre = argparse.ArgumentParser(add_help=False)
    extra(pre)
    return pre.parse_known_args(argv)[0]


def parse_config(description: str = "", defaults: dict | None = None,
                 extra: Callable[[argparse.ArgumentParser], None] | None = None,
                 argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse argv into (TrainConfig, full namespace incl. the example's own flags)."""
    parser = build_parser(description, defaults, extra)
    args = parser.parse_args(argv)
    try:
        return config_from_args(args), args
    except ValueError as e:
        parser.error(str(e))
