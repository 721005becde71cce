"""The common CLI of every example: the example's own flags (checked argparse types), then one group per
`TrainConfig` section; a `Derived` default is computed after parsing unless the flag is given. No torch import.

Plugins: the modules named in `$TORCHRL_AMAGO_PLUGINS` (comma-separated) are imported before parsing, so what they
register is selectable: `TORCHRL_AMAGO_PLUGINS=my_encoders python examples/04_tmaze.py --traj_encoder mine`.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import math
import os
from typing import Any, Callable

from .config import (RETIRED, SECTIONS, TrainConfig, _value_type, at_least, between, field_default,
                     retired_error, sections)


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


def checked(tp: type, check: Callable[[Any], str | None] | None = None) -> Callable[[str], Any]:
    """An argparse `type` for an example's own flag: a `tp` value (a float must be finite) that passes `check`
    (`at_least(1)`, `between(0, 1)`, `positive`: trainers.config), so a bad value is a usage error naming the flag,
    e.g. ``p.add_argument("--horizon", type=checked(int, at_least(1)))``."""
    def parse(text: str):
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {tp.__name__} value: {text!r}") from None
        problem = "must be a finite number" if tp is float and not math.isfinite(value) else check and check(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    parse.__name__ = tp.__name__
    parse.__doc__ = f"argparse type: {tp.__name__}{' (finite)' if tp is float else ''}, checked by {check}"
    return parse


#: The argparse types of the examples' own flags (every flag of an example is checked where it is defined).
positive_int, nonneg_int = checked(int, at_least(1)), checked(int, at_least(0))
probability, finite_float = checked(float, between(0, 1)), checked(float)
positive_int.__doc__, nonneg_int.__doc__ = "argparse type: an integer >= 1", "argparse type: an integer >= 0"
probability.__doc__, finite_float.__doc__ = "argparse type: a number in [0, 1]", "argparse type: a finite number"


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _add_field(group, f: dataclasses.Field, default: Any) -> None:
    tp, container = _value_type(f)
    choices = f.metadata["choices"]
    text = f.metadata["help"] + (f" {{{', '.join(map(str, choices))}}}" if choices else "")
    if default is not None:  # an unset optional field says what unset means in its help
        text += f" (default: {_shown(default)})"
    kw = dict(default=_UNSET if isinstance(default, Derived) else default, help=text.replace("%", "%%"))
    flag = f"--{f.name}"
    if tp is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif container == "list":
        group.add_argument(flag, nargs="+", type=tp, **kw)
    elif container == "tuple":
        group.add_argument(flag, nargs=2, type=tp, metavar=f.metadata["metavar"] or ("LOW", "HIGH"), **kw)
    else:
        group.add_argument(flag, type=tp, metavar=f.name.upper() if choices else None, **kw)


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
    """The common parser: the example's flags (`extra`), then one group per `TrainConfig` section with `defaults`
    overriding the dataclass defaults."""
    defaults = defaults or {}
    _check_default_names(defaults)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [-h] [options]   (options by group below)")
    if extra is not None:
        extra(parser.add_argument_group("example options"))
    for section, fields in sections().items():
        group = parser.add_argument_group(SECTIONS[section])
        for f in fields:
            _add_field(group, f, defaults.get(f.name, field_default(f.name)))
    return parser


def _check_default_names(defaults: dict) -> None:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    retired = sorted(set(defaults) & set(RETIRED))
    if retired:
        raise ValueError("; ".join(retired_error(n) for n in retired))
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig defaults: {unknown}")


def refuse_retired_flags(argv: list[str]) -> None:
    """A retired flag (`--keep_best`, `--no-keep_best`, `--keep_best=...`) is an error that says what to use."""
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            name = name[3:] if name.startswith("no-") else name
            if name in RETIRED:
                raise SystemExit(f"error: {retired_error(name)}")


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


def example_flags(args: argparse.Namespace, *but: str) -> dict[str, Any]:
    """An example's own flags in a `parse_config` namespace (those that are no TrainConfig field), except `but`
    (flags that only steer the final eval): the settings that, beside the config, define the run
    (`AMAGOTrainer(settings=...)`; a resume must give the same)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k not in fields and k not in but}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    kw = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name)
        kw[f.name] = tuple(value) if _value_type(f)[1] == "tuple" and isinstance(value, list) else value
    return TrainConfig(**kw)


def example_args(extra: Callable[[argparse.ArgumentParser], None], argv: list[str] | None = None
                 ) -> argparse.Namespace:
    """The example's own flags only (unknown flags ignored), for values the TrainConfig defaults depend on,
    e.g. T-Maze's `max_seq_len = horizon + 1`. `--help` is left to `parse_config`. No abbreviations: a common flag
    that begins like one of the example's is not taken for it."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    extra(pre)
    return pre.parse_known_args(argv)[0]


def resolve_derived(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """Replace every field left at its `Derived` default by its value. A `Derived` may read other `Derived` fields:
    they are resolved first, whatever their order in `defaults`."""
    pending = {n: d for n, d in defaults.items() if isinstance(d, Derived) and getattr(args, n) is _UNSET}
    busy: set[str] = set()

    class Resolved:  # what a Derived sees: the namespace, with the Derived fields it reads resolved on the way
        def __getattr__(self, name):
            if name in pending:
                if name in busy:
                    raise ValueError(f"the derived defaults of {sorted(busy)} depend on each other")
                busy.add(name)
                setattr(args, name, pending.pop(name)(self))
                busy.discard(name)
            return getattr(args, name)

    view = Resolved()
    for name in list(pending):
        getattr(view, name)
    return args


def parse_config(description: str = "", defaults: dict | None = None,
                 extra: Callable[[argparse.ArgumentParser], None] | None = None,
                 argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse argv into (TrainConfig, full namespace incl. the example's own flags); a bad value exits with a usage
    error naming the flag."""
    import sys

    import_plugins()
    argv = sys.argv[1:] if argv is None else list(argv)
    refuse_retired_flags(argv)
    parser = build_parser(description, defaults, extra)
    args = parser.parse_args(argv)
    try:
        args = resolve_derived(args, defaults or {})
        return config_from_args(args), args
    except ValueError as e:
        parser.error(blame_defaults(str(e), defaults or {}, argv))


def blame_defaults(message: str, defaults: dict, argv: list[str]) -> str:
    """`message` of a bad value, plus, when the flag it names was not typed, where its value came from (a `Derived`
    default or the example's), so the user looks at the flags they gave."""
    flag = message.split(" ", 1)[0].split("=", 1)[0]
    name = flag[2:]
    typed = any(a.split("=", 1)[0] in (flag, f"--no-{name}") for a in argv)
    if not flag.startswith("--") or typed or name not in defaults:
        return message
    how = (f"its default here is {defaults[name]!r}" if isinstance(defaults[name], Derived)
           else "the example derives its default from its own flags")
    return f"{message} ({flag} was not given: {how}; check those flags or set {flag})"


def markdown_table() -> str:
    """Every flag by section with its default, choices and help: the reference table in docs/api/trainers.md is this
    output (`python -m torchrl_amago.trainers.cli`; a test keeps the two equal)."""
    rows = []
    for section, fields in sections().items():
        rows += [f"**{SECTIONS[section]}**", "", "| flag | default | help |", "|---|---|---|"]
        for f in fields:
            choices = f.metadata["choices"]
            text = f.metadata["help"] + (" (" + " \\| ".join(map(str, choices)) + ")" if choices else "")
            rows.append(f"| `--{f.name}` | `{field_default(f.name)!r}` | {text} |")
        rows.append("")
    return "\n".join(rows).rstrip("\n")


if __name__ == "__main__":
    print(markdown_table())
