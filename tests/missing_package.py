"""One check for "a missing optional package gives an ImportError that names what to pip install"."""
from __future__ import annotations

import sys
from typing import Callable

import pytest


def hide_modules(monkeypatch, *names: str) -> None:
    """Make `import name` (and `import name.sub` for already-imported submodules) raise ImportError."""
    for name in names:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")] or [name]:
            monkeypatch.setitem(sys.modules, key, None)


def assert_missing_package_named(monkeypatch, modules: str | tuple[str, ...], match: str,
                                 *calls: Callable[[], object]) -> None:
    """Hide `modules`, then every call must raise an ImportError whose message matches `match`."""
    hide_modules(monkeypatch, *((modules,) if isinstance(modules, str) else modules))
    assert calls, "give at least one call to check"
    for call in calls:
        with pytest.raises(ImportError, match=match):
            call()
