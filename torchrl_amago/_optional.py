"""Lazy imports of optional dependencies with an error that names what to install."""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, package: str | None = None, feature: str | None = None) -> ModuleType:
    """Import `module` or raise ImportError saying which pip package to install (and for which feature)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = f" for {feature}" if feature else ""
        raise ImportError(
            f"`{module}` is required{what} but is not installed: `pip install {package or module}`"
        ) from e


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
