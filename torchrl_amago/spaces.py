"""Action-space description shared by every layer: maps a TorchRL action spec to one `ActionSpace` record."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torchrl.data import Binary, Bounded, Categorical, Composite, MultiCategorical, MultiOneHot, OneHot, TensorSpec, Unbounded

KINDS = ("discrete", "continuous", "multibinary")


@dataclass(frozen=True)
class ActionSpace:
    """kind: 'discrete' | 'continuous' | 'multibinary'; dim: A (number of actions for discrete, vector size
    otherwise); one_hot: True when the env expects one-hot discrete actions (TorchRL `OneHot`), False when it
    expects an integer index (TorchRL `Categorical`). low/high: continuous bounds (the policy acts in [-1, 1])."""

    kind: str
    dim: int
    one_hot: bool = False
    dtype: torch.dtype | None = field(default=None, compare=False)  # the env's action dtype, if known

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unsupported action kind {self.kind!r}; expected one of {KINDS}")
        if self.dim < 1:
            raise ValueError(f"action dim must be >= 1, got {self.dim}")

    @property
    def discrete(self) -> bool:
        return self.kind == "discrete"

    def to_features(self, action: torch.Tensor) -> torch.Tensor:
        """Env action -> float feature vector [..., A] (one-hot for discrete, raw otherwise)."""
        if self.kind == "discrete":
            if self.one_hot:
                if action.shape[-1] != self.dim:
                    raise ValueError(f"one-hot action must end in dim {self.dim}, got shape {tuple(action.shape)}")
                return action.float()
            # Categorical actions have exactly the batch shape: never squeeze a trailing dim
            return torch.nn.functional.one_hot(action.long(), self.dim).float()
        if action.shape[-1] != self.dim:
            raise ValueError(f"{self.kind} action must end in dim {self.dim}, got shape {tuple(action.shape)}")
        return action.float()

    def from_index(self, index: torch.Tensor) -> torch.Tensor:
        """Discrete index [...] -> the env's encoding (one-hot [..., A] or int64 index [...])."""
        if self.kind != "discrete":
            raise ValueError("from_index is only defined for discrete action spaces")
        if self.one_hot:
            return torch.nn.functional.one_hot(index.long(), self.dim).to(self.dtype or torch.long)
        return index.to(self.dtype or torch.long)


def action_space_from_spec(spec: TensorSpec) -> ActionSpace:
    """Map a TorchRL action spec (batched or not) to an `ActionSpace`; clear error on unsupported specs."""
    if isinstance(spec, Composite):
        raise ValueError(f"composite (dict) action specs are not supported (keys {list(spec.keys(True, True))}); "
                         "flatten them into one action")
    if isinstance(spec, (MultiOneHot, MultiCategorical)):  # subclasses of OneHot / Categorical: test first
        raise ValueError(f"{type(spec).__name__} (multi-discrete) action specs are not supported; flatten them into "
                         "one Categorical or use a MultiBinary encoding")
    if isinstance(spec, Binary):  # Binary subclasses Categorical: test it first
        return ActionSpace("multibinary", int(spec.shape[-1]), dtype=spec.dtype)
    if isinstance(spec, OneHot):
        return ActionSpace("discrete", int(spec.space.n), one_hot=True, dtype=spec.dtype)
    if isinstance(spec, Categorical):
        return ActionSpace("discrete", int(spec.space.n), one_hot=False, dtype=spec.dtype)
    if isinstance(spec, (Bounded, Unbounded)) and spec.dtype.is_floating_point:
        if spec.ndim == 0:
            raise ValueError("continuous action spec must have a trailing action dimension, got a scalar spec")
        return ActionSpace("continuous", int(spec.shape[-1]), dtype=spec.dtype)
    raise ValueError(f"unsupported action spec {type(spec).__name__} (dtype {spec.dtype}); supported: OneHot, "
                     "Categorical, Binary, and float Bounded/Unbounded")


def unit_box_affine(low, high, what: str = "action space") -> tuple[np.ndarray, np.ndarray]:
    """``(loc, scale)`` (float32) mapping the policy's ``[-1, 1]`` onto ``[low, high]``: ``a_env = a * scale + loc``;
    unbounded or empty bounds are a ValueError naming ``what``."""
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    if not (np.isfinite(low).all() and np.isfinite(high).all()) or bool((high <= low).any()):
        raise ValueError(f"{what} must be finite with high > low to be rescaled to [-1, 1], got low={low}, "
                         f"high={high}")
    return (high + low) / 2.0, (high - low) / 2.0
