"""torchrl_amago: AMAGO (in-context RL with long-context sequence models) as TorchRL components."""
__version__ = "0.3.1"  # the one place: setup.py reads it, tests/test_packaging.py checks CITATION.cff and CHANGELOG.md
from ._optional import available, require

__all__ = ["available", "require"]
