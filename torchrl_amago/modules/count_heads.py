"""Count-aware heads: each discrete action's output adds ``coef(h) . [c > 0, log(1 + c)]`` of its count ``c``, with
``coef`` shared by every action (docs/results/ablations/no_repeat.md)."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from .. import keys as K
from ..spaces import ActionSpace
from .heads import ActorHead, DiscreteCritic, _check_last_dim
from .trajectory.base import TrajectoryEncoder

#: features of one action's count: taken before at all, and log(1 + how often)
NUM_COUNT_FEATURES = 2


def count_features(counts: torch.Tensor) -> torch.Tensor:
    """``[*, A]`` counts -> ``[*, A, 2]``: ``[count > 0, log(1 + count)]``."""
    return torch.stack([(counts > 0).to(counts.dtype), torch.log1p(counts.clamp_min(0))], dim=-1)


def split_counts(state: torch.Tensor, num_actions: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[*, D + A]`` -> (``[*, D]`` embedding, ``[*, A]`` counts)."""
    if state.shape[-1] <= num_actions:
        raise ValueError(f"{what}: the input is {state.shape[-1]} wide, which leaves no state embedding before the "
                         f"{num_actions} action counts")
    return state[..., :-num_actions], state[..., -num_actions:]


class CountsBesideEmbedding(TensorDictModuleBase):
    """A timestep encoder whose embedding ends with the step's ``action_counts`` (``[*, E + A]``, raw counts).
    Keys: reads ``timestep_encoder``'s keys plus ``counts_key``; writes its out key."""

    def __init__(self, timestep_encoder: TensorDictModuleBase, num_actions: int, counts_key=K.ACTION_COUNTS):
        super().__init__()
        self.timestep_encoder, self.num_actions, self.counts_key = timestep_encoder, int(num_actions), counts_key
        self.in_keys = list(timestep_encoder.in_keys) + ([counts_key] if counts_key not in timestep_encoder.in_keys
                                                         else [])
        self.out_keys = list(timestep_encoder.out_keys)
        self.emb_dim = int(timestep_encoder.emb_dim) + self.num_actions

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        counts = td.get(self.counts_key, None)
        if counts is None:
            raise KeyError(f"CountsBesideEmbedding: key {self.counts_key!r} is missing; the env needs the ActionCounts "
                           "transform (--action_counts, make_amago_env(action_counts=True))")
        td = self.timestep_encoder(td)
        emb = td.get(self.out_keys[0])
        _check_last_dim(counts, self.num_actions, f"{self.counts_key!r}")
        td.set(self.out_keys[0], torch.cat([emb, counts.to(emb.dtype).expand(*emb.shape[:-1], -1)], dim=-1))
        return td


class CountsPassThrough(TrajectoryEncoder):
    """Runs ``encoder`` on all but the last ``num_actions`` channels and appends those channels to its output."""

    def __init__(self, encoder: TrajectoryEncoder, num_actions: int):
        if not isinstance(encoder, TrajectoryEncoder):
            raise ValueError(f"--count_heads needs a trajectory encoder of torchrl_amago.modules.trajectory "
                             f"(TrajectoryEncoder), got {type(encoder).__name__}")
        super().__init__(encoder.input_dim + int(num_actions), encoder.max_seq_len)
        self.encoder, self.num_actions = encoder, int(num_actions)
        self.emb_dim, self.packable = encoder.emb_dim + self.num_actions, encoder.packable

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor, **kwargs) -> torch.Tensor:
        emb, counts = split_counts(x, self.num_actions, "CountsPassThrough")
        out = self.encoder(emb, time_idx, **kwargs)
        return torch.cat([out, counts.to(out.dtype)], dim=-1)

    def init_state(self, batch_size: int, device=None) -> Any:
        return self.encoder.init_state(batch_size, device)

    def reset_state(self, state: Any, is_init: torch.Tensor) -> Any:
        return self.encoder.reset_state(state, is_init)

    def step(self, x: torch.Tensor, time_idx: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        emb, counts = split_counts(x, self.num_actions, "CountsPassThrough")
        out, state = self.encoder.step(emb, time_idx, state)
        return torch.cat([out, counts.to(out.dtype)], dim=-1), state

    def state_shapes(self):
        return self.encoder.state_shapes()

    def state_to_tensors(self, state):
        return self.encoder.state_to_tensors(state)

    def state_from_tensors(self, tensors):
        return self.encoder.state_from_tensors(tensors)


class _CountTerm(nn.Module):
    """``coef(h) . psi(count_a)`` for every action: ``[*, D]``, ``[*, A]`` -> ``[*, groups, A]``; starts at zero."""

    def __init__(self, state_dim: int, groups: int):
        super().__init__()
        self.groups = groups
        self.coef = nn.Linear(state_dim, groups * NUM_COUNT_FEATURES)
        nn.init.zeros_(self.coef.weight)
        nn.init.zeros_(self.coef.bias)

    def forward(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        coef = self.coef(h).unflatten(-1, (self.groups, NUM_COUNT_FEATURES))  # [*, groups, F]
        return torch.einsum("...gf,...af->...ga", coef, count_features(counts.to(coef.dtype)))


class CountActorHead(ActorHead):
    """`ActorHead` for discrete actions on ``[h, action_counts]`` ``[*, D + A]``: base logits plus the count term."""

    def __init__(self, state_dim: int, action_space: ActionSpace, num_gammas: int, **kw):
        if action_space.kind != "discrete":
            raise ValueError(f"--count_heads needs discrete actions, got {action_space.kind!r}")
        super().__init__(state_dim, action_space, num_gammas, **kw)
        self.count_term = _CountTerm(state_dim, num_gammas)

    def forward(self, state_emb: torch.Tensor) -> torch.Tensor:
        A = self.action_space.dim
        _check_last_dim(state_emb, self.state_dim + A, "CountActorHead input [state_emb, action_counts]")
        h, counts = split_counts(state_emb, A, "CountActorHead")
        return super().forward(h) + self.count_term(h, counts)


class CountDiscreteCritic(DiscreteCritic):
    """`DiscreteCritic` on ``[h, action_counts]``: the base Q plus the count term -> ``[*, C, G, A]``."""

    def __init__(self, state_dim: int, num_actions: int, num_gammas: int, num_critics: int = 4, **kw):
        super().__init__(state_dim, num_actions, num_gammas, num_critics, **kw)
        self.count_term = _CountTerm(state_dim, num_critics * num_gammas)

    def forward(self, state_emb: torch.Tensor) -> torch.Tensor:
        _check_last_dim(state_emb, self.state_dim + self.num_actions,
                        "CountDiscreteCritic input [state_emb, action_counts]")
        h, counts = split_counts(state_emb, self.num_actions, "CountDiscreteCritic")
        return super().forward(h) + self.count_term(h, counts).unflatten(-2, (self.num_critics, self.num_gammas))
