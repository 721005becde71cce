"""The common CLI of every example: one flag per `TrainConfig` field, plus example-specific flags.

`parse_config(defaults=..., extra=...)` gives every example the same `--help`, with the example's own
defaults (e.g. T-Maze sets `max_seq_len` from its horizon) and its domain flags added by `extra`. Every flag's
help comes from `flag_help.FIELD_HELP`, its choices from `config.FIELD_CHOICES`. A default may be `Derived`:
it is computed after parsing from the parsed values (e.g. `eps_steps_anneal` from `--epochs`), unless the flag
is given.

Plugins: the modules named in the environment variable `TORCHRL_AMAGO_PLUGINS` (comma-separated, importable) are
imported before parsing, so what they register (e.g. `register_trajectory_encoder("mine", Mine)`) is selectable
in every example: `TORCHRL_AMAGO_PLUGINS=my_encoders python examples/04_tmaze.py --traj_encoder mine`.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import os
import types
import typing
from typing import Any, Callable

from .config import FIELD_CHOICES, TrainConfig
from .flag_help import FIELD_HELP


class Derived:
    """A default computed after parsing: `fn(namespace)` sees every parsed flag (TrainConfig fields and the
    example's own); used only when the flag is not on the command line. `text` is what `--help` shows."""

    def __init__(self, fn: Callable[[argparse.Namespace], Any], text: str):
        self.fn, self.text = fn, text

    def __call__(self, ns: argparse.Namespace) -> Any:
        return self.fn(ns)

    def __repr__(self) -> str:
        return self.text


_UNSET = object()  # argparse default of a Derived field: replaced after parsing


def _field_type(name: str):
    tp = typing.get_type_hints(TrainConfig)[name]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    return tp, origin, args


def _add_field(parser, f: dataclasses.Field, default: Any) -> None:
    tp, origin, args = _field_type(f.name)
    choices = FIELD_CHOICES.get(f.name)
    help_ = FIELD_HELP[f.name] + (f" {{{', '.join(map(str, choices))}}}" if choices else "") + f" (default: {default})"
    kw = dict(default=_UNSET if isinstance(default, Derived) else default, help=help_)
    flag = f"--{f.name}"
    if tp is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif origin is dict:
        parser.add_argument(flag, nargs="+", type=str, metavar="KEY=VALUE", **kw)
    elif origin is list:
        parser.add_argument(flag, nargs="+", type=args[0], **kw)
    elif origin is tuple:
        parser.add_argument(flag, nargs=len(args), type=args[0], **kw)
    else:
        parser.add_argument(flag, type=tp, metavar=f.name.upper() if choices else None, **kw)


PLUGINS_ENV = "TORCHRL_AMAGO_PLUGINS"


def import_plugins() -> list[str]:
    """Import the modules named in `$TORCHRL_AMAGO_PLUGINS` (comma-separated); returns their names."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"{PLUGINS_ENV}: cannot import plugin module {name!r} ({e})") from e
    return names


def build_parser(description: str = "", defaults: dict | None = None,
                 extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """The common argparse parser: one flag per `TrainConfig` field (help, default, choices), `defaults` overriding
    the dataclass defaults, plus the example's own flags added by `extra`."""
    import_plugins()
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


def parse_key_values(flag: str, pairs: list[str]) -> dict[str, Any]:
    """`["a=1", "b=x"]` -> `{"a": 1, "b": "x"}`: values are Python literals where they parse as one, else strings.
    A pair without `=` is a ValueError naming `--flag`."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--{flag} wants KEY=VALUE pairs, got {pair!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in names}
    for name in ("discrete_clip", "cql_ramp"):
        if isinstance(kw.get(name), list):
            kw[name] = tuple(kw[name])
    if isinstance(kw.get("fbc_filter_kwargs"), list):
        kw["fbc_filter_kwargs"] = parse_key_values("fbc_filter_kwargs", kw["fbc_filter_kwargs"])
    return TrainConfig(**kw)


def example_args(extra: Callable[[argparse.ArgumentParser], None], argv: list[str] | None = None
                 ) -> argparse.Namespace:
    """The example's own flags only (unknown flags ignored), for values the TrainConfig defaults depend on,
    e.g. T-Maze's `max_seq_len = horizon + 1`. `--help` is left to `parse_config`. No abbreviations: a common flag
    that begins like one of the example's (`--final_eval` of `--final_eval_timesteps`) is not taken for it."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    extra(pre)
    return pre.parse_known_args(argv)[0]


def resolve_derived(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """Replace every field left at its `Derived` default by its value, in the order `defaults` lists them."""
    for name, default in defaults.items():
        if isinstance(default, Derived) and getattr(args, name) is _UNSET:
            setattr(args, name, default(args))
    return args


def parse_config(description: str = "", defaults: dict | None = None,
                 extra: Callable[[argparse.ArgumentParser], None] | None = None,
                 argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse argv into (TrainConfig, full namespace incl. the example's own flags)."""
    parser = build_parser(description, defaults, extra)
    args = parser.parse_args(argv)
    try:
        args = resolve_derived(args, defaults or {})
        return config_from_args(args), args
    except ValueError as e:
        parser.error(str(e))
