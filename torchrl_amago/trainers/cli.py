"""The common CLI of every example: its own flags, then one group per `TrainConfig` section; modules named
in `$TORCHRL_AMAGO_PLUGINS` are imported first. No torch import."""
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
    """A default computed after parsing, `fn(namespace)`, unless the flag is given; `--help` shows `text`."""

    def __init__(self, fn: Callable[[argparse.Namespace], Any], text: str):
        self.fn, self.text = fn, text

    def __call__(self, ns: argparse.Namespace) -> Any:
        return self.fn(ns)

    def __repr__(self) -> str:
        return self.text


_UNSET = object()  # argparse default of a Derived field: replaced after parsing


def checked(tp: type, check: Callable[[Any], str | None] | None = None) -> Callable[[str], Any]:
    """An argparse `type`: a `tp` value (a finite float) that passes `check`, e.g. ``checked(int, at_least(1))``."""
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


#: The argparse types of the examples' own flags.
positive_int, nonneg_int = checked(int, at_least(1)), checked(int, at_least(0))
probability, finite_float = checked(float, between(0, 1)), checked(float)
positive_int.__doc__, nonneg_int.__doc__ = "argparse type: an integer >= 1", "argparse type: an integer >= 0"
probability.__doc__, finite_float.__doc__ = "argparse type: a number in [0, 1]", "argparse type: a finite number"


def _add_field(group, f: dataclasses.Field, default: Any) -> None:
    tp, container = _value_type(f)
    choices = f.metadata["choices"]
    text = f.metadata["help"] + (f" {{{', '.join(map(str, choices))}}}" if choices else "")
    if default is not None:
        text += f" (default: {' '.join(map(str, default)) if isinstance(default, (list, tuple)) else default})"
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
    """The common parser: the example's flags (`extra`), then the `TrainConfig` sections with `defaults`."""
    defaults = defaults or {}
    retired = sorted(set(defaults) & set(RETIRED))
    if retired:
        raise ValueError("; ".join(retired_error(n) for n in retired))
    unknown = sorted(set(defaults) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown TrainConfig defaults: {unknown}")
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [-h] [options]   (options by group below)")
    if extra is not None:
        extra(parser.add_argument_group("example options"))
    for section, fields in sections().items():
        group = parser.add_argument_group(SECTIONS[section])
        for f in fields:
            _add_field(group, f, defaults.get(f.name, field_default(f.name)))
    return parser


def parse_key_values(flag: str, pairs: list[str]) -> dict[str, Any]:
    """`["a=1", "b=x"]` -> `{"a": 1, "b": "x"}` (Python literals where they parse as one)."""
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
    """An example's own flags in a `parse_config` namespace, except `but`: the run's `AMAGOTrainer(settings=...)`."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k not in fields and k not in but}


def example_args(extra: Callable[[argparse.ArgumentParser], None], argv: list[str] | None = None
                 ) -> argparse.Namespace:
    """The example's own flags only (others ignored), for defaults that depend on them."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    extra(pre)
    return pre.parse_known_args(argv)[0]


def resolve_derived(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """Replace every field left at its `Derived` default by its value (one may read another)."""
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
    """Parse argv into (TrainConfig, the namespace with the example's own flags); a bad value is a usage error."""
    import sys

    import_plugins()
    argv = sys.argv[1:] if argv is None else list(argv)
    for arg in argv:  # a retired flag (`--x`, `--no-x`, `--x=...`) says what to use
        name = arg[2:].split("=", 1)[0].removeprefix("no-")
        if arg.startswith("--") and name in RETIRED:
            raise SystemExit(f"error: {retired_error(name)}")
    parser = build_parser(description, defaults, extra)
    args = parser.parse_args(argv)
    try:
        args = resolve_derived(args, defaults or {})
        fields = dataclasses.fields(TrainConfig)
        tuples = {f.name for f in fields if _value_type(f)[1] == "tuple"}  # nargs gives lists
        kw = {f.name: getattr(args, f.name) for f in fields}
        return TrainConfig(**{k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in kw.items()}), args
    except ValueError as e:
        parser.error(blame_defaults(str(e), defaults or {}, argv))


def blame_defaults(message: str, defaults: dict, argv: list[str]) -> str:
    """`message` of a bad value, plus, when its flag was not typed, where its default came from."""
    flag = message.split(" ", 1)[0].split("=", 1)[0]
    name = flag[2:]
    typed = any(a.split("=", 1)[0] in (flag, f"--no-{name}") for a in argv)
    if not flag.startswith("--") or typed or name not in defaults:
        return message
    how = (f"its default here is {defaults[name]!r}" if isinstance(defaults[name], Derived)
           else "the example derives its default from its own flags")
    return f"{message} ({flag} was not given: {how}; check those flags or set {flag})"


def markdown_table() -> str:
    """Every flag by section: docs/api/trainers.md's table (`python -m torchrl_amago.trainers.cli`)."""
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
