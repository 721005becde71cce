"""The common CLI of every example: its own flags, then one group per `TrainConfig` section; modules named
in `$TORCHRL_AMAGO_PLUGINS` are imported first. No torch import."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import json
import math
import os
from typing import Any, Callable

from .config import (CONFIG_FILE, CONFIG_FORMAT, IDENTITY_FILE, RETIRED, SECTIONS, TrainConfig, _value_type, at_least,
                     between, field_default, retired_error, sections)


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
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {"config"}  # --config: where flags came from
    return {k: v for k, v in vars(args).items() if k not in fields and k not in but}


MAX_JSON_BYTES = 2**20  # a run's run.json / config.json, or a --config file


def read_json(path: str, what: str) -> Any:
    """A small JSON file a user points at (`what` names where from): not a link, at most `MAX_JSON_BYTES`."""
    if os.path.islink(path):
        raise ValueError(f"{what} {path} is a symlink; refused (point at the file itself)")
    try:
        if os.path.getsize(path) > MAX_JSON_BYTES:
            raise ValueError(f"{what} {path} is larger than {MAX_JSON_BYTES} bytes; refused")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is not a readable JSON file ({type(e).__name__}: {e})") from None


#: Never read from a file: they say where the run is.
LOCATION_FLAGS = ("buffer_dir", "run_name")


def config_file_values(path: str, what: str = "--config", strict: bool = True, known: set[str] = frozenset()) -> dict:
    """The flags of a config file, less `LOCATION_FLAGS`: a run's ``config.json`` (its ``config``, and its
    ``settings`` for the example flags in `known`) or a plain ``{flag: value}`` object of `TrainConfig` fields and
    `known` flags. Another name is a ValueError naming it and the file (not `strict`: left out, e.g. a flag an older
    release had)."""
    data = read_json(path, what)
    if isinstance(data, dict) and data.get("format") == CONFIG_FORMAT:
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        config = data.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{what} {path} must hold an object of flags (or a run's {CONFIG_FILE})")
        data = {**{k: v for k, v in settings.items() if k in known}, **config}
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold an object of flags (or a run's {CONFIG_FILE})")
    fields = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(data) - fields - set(known))
    if unknown and strict:
        raise ValueError(f"{what} {path}: unknown flags {unknown}")
    return {k: v for k, v in data.items() if (k in fields or k in known) and k not in LOCATION_FLAGS}


def run_settings_of(run_dir: str) -> dict:
    """The settings a run recorded (``run.json``: its script, env arguments and the example's own flags), or {}."""
    path = os.path.join(run_dir, IDENTITY_FILE)
    if not os.path.isfile(path):
        return {}
    data = read_json(path, "the run's")
    settings = data.get("settings") if isinstance(data, dict) else None
    return settings if isinstance(settings, dict) else {}


def _typed(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _locator(argv: list[str]) -> argparse.Namespace:
    """`--buffer_dir`, `--run_name` and `--config` as typed in `argv` (None where not typed)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--buffer_dir", "--run_name", "--config"):
        pre.add_argument(flag, default=None)
    return pre.parse_known_args(argv)[0]


def example_args(extra: Callable[[argparse.ArgumentParser], None], argv: list[str] | None = None
                 ) -> argparse.Namespace:
    """The example's own flags only (others ignored), for defaults that depend on them. With a typed `--run_name`
    whose folder holds a run, a flag not typed takes the value that run recorded; with `--config FILE`, the value in
    FILE."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    extra(pre)
    loc, known = _locator(argv), {a.dest for a in pre._actions} - {"help"}
    recorded = {}
    if loc.run_name is not None:
        recorded = run_settings_of(os.path.join(loc.buffer_dir or field_default("buffer_dir"), loc.run_name))
    if loc.config is not None:
        recorded.update(config_file_values(loc.config, strict=False, known=known))
    pre.set_defaults(**{k: v for k, v in recorded.items() if k in known})
    return pre.parse_known_args(argv)[0]


def recorded_defaults(args: argparse.Namespace, argv: list[str], known: set[str]) -> dict[str, tuple[Any, str]]:
    """``{flag: (value, where from)}`` that replace the defaults of a command: the run folder's ``config.json`` (a
    run being resumed or evaluated), its ``run.json`` settings for the example's own flags (with a typed
    `--run_name`, as `example_args` reads them), then a `--config` file's flags on top."""
    out: dict[str, tuple[Any, str]] = {}
    folder = os.path.join(args.buffer_dir, args.run_name)
    stored = os.path.join(folder, CONFIG_FILE)
    if os.path.isfile(stored):
        out.update({k: (v, stored) for k, v in config_file_values(stored, "the run's", strict=False).items()})
    if _typed(argv, "--run_name"):
        fields = set(TrainConfig.__dataclass_fields__)
        out.update({k: (v, os.path.join(folder, IDENTITY_FILE)) for k, v in run_settings_of(folder).items()
                    if k in known and k not in fields})
    if args.config is not None:
        own = known - set(TrainConfig.__dataclass_fields__) - {"help", "config"}  # the example's own flags
        out.update({k: (v, args.config) for k, v in config_file_values(args.config, known=own).items()})
    out.pop("eval_only", None)  # never recorded: a run trains unless told otherwise
    return out


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


def run_main(main: Callable[[], Any]) -> Any:
    """An example's entry point: ``main()``; a run that is refused (`CheckpointError`, `RunDirError`, or a file
    refused by `UnsafeFileError`) ends with its message on one line and exit status 2, not a traceback."""
    try:
        return main()
    except Exception as e:  # noqa: BLE001 - anything else is re-raised as it is
        import sys

        refusals = tuple(getattr(sys.modules.get(m), n, ()) for m, n in (
            ("torchrl_amago.trainers.run.checkpoint", "CheckpointError"),
            ("torchrl_amago.data.safe_files", "UnsafeFileError")))
        if not any(isinstance(e, r) for r in refusals if isinstance(r, type)):
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


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
    parser.add_argument_group("config file").add_argument(
        "--config", default=None, metavar="FILE", help="start from the flags in FILE (a run's config.json, or a JSON "
        "object of flags); flags typed here override them. A run being resumed or evaluated starts from its own "
        "<buffer_dir>/<run_name>/config.json")
    args = parser.parse_args(argv)
    where: dict[str, str] = {}
    try:
        if isinstance(args.run_name, str) and isinstance(args.buffer_dir, str):
            recorded = recorded_defaults(args, argv, {a.dest for a in parser._actions})
            if recorded:
                where = {k: w for k, (_, w) in recorded.items()}
                parser.set_defaults(**{k: v for k, (v, _) in recorded.items()})
                args = parser.parse_args(argv)
        args = resolve_derived(args, defaults or {})
        fields = dataclasses.fields(TrainConfig)
        tuples = {f.name for f in fields if _value_type(f)[1] == "tuple"}  # nargs gives lists
        kw = {f.name: getattr(args, f.name) for f in fields}
        return TrainConfig(**{k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in kw.items()}), args
    except ValueError as e:
        parser.error(blame_defaults(str(e), defaults or {}, argv, where))


def blame_defaults(message: str, defaults: dict, argv: list[str], recorded: dict[str, str] | None = None) -> str:
    """`message` of a bad value, plus, when its flag was not typed, where its default came from (`recorded`: the
    file each recorded default was read from)."""
    flag = message.split(" ", 1)[0].split("=", 1)[0]
    name = flag[2:]
    typed = any(a.split("=", 1)[0] in (flag, f"--no-{name}") for a in argv)
    if not flag.startswith("--") or typed:
        return message
    if name in (recorded or {}):
        return f"{message} ({flag} was not given: its value comes from {recorded[name]}; set {flag})"
    if name not in defaults:
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
