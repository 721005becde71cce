"""torchrl_amago: AMAGO (in-context RL with long-context sequence models) as TorchRL components."""
__version__ = "0.1.0"
from ._optional import available, require

__all__ = ["available", "require"]
