"""Tiny AMAGOLoss stacks and random [B, T] batches for the loss tests."""
from __future__ import annotations

import torch
from tensordict import TensorDict

from torchrl_amago.modules.heads import ActorHead, ContinuousCritic, DiscreteCritic, TwoHotCritic
from torchrl_amago.modules.timestep import MLPTimestepEncoder
from torchrl_amago.modules.trajectory import make_trajectory_encoder
from torchrl_amago.objectives import AMAGOLoss
from torchrl_amago.spaces import ActionSpace

O, A, D = 5, 3, 16
GAMMAS = [0.1, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999]


def build(kind="discrete", critic="auto", encoder="transformer", seed=0, one_hot=False, continuous_dist="tanh_gaussian",
          **loss_kw):
    """kind: discrete | continuous | multibinary; critic: auto | two_hot | continuous. The scalar critics get a random
    last layer (`zero_init_output=False`), so every loss path carries gradient from the first step."""
    torch.manual_seed(seed)
    asp = ActionSpace(kind, A, one_hot=one_hot and kind == "discrete")
    te = MLPTimestepEncoder({"observation": (O,)}, A, d_hidden=D, d_output=D)
    kw = dict(n_heads=2) if encoder == "transformer" else {}
    tr = make_trajectory_encoder(encoder, D, 64, d_model=D, n_layers=1, **kw)
    gammas = loss_kw.pop("gammas", GAMMAS)
    G = len(gammas)
    actor = ActorHead(tr.emb_dim, asp, G, d_hidden=D, continuous_dist=continuous_dist)
    if critic == "two_hot":
        head = TwoHotCritic(tr.emb_dim, A, gammas, 3, num_bins=21, min_return=-50, max_return=50, d_hidden=D)
    elif critic == "continuous" or (critic == "auto" and kind != "discrete"):
        head = ContinuousCritic(tr.emb_dim, A, gammas, 3, d_hidden=D, zero_init_output=False)
    else:
        head = DiscreteCritic(tr.emb_dim, A, G, 3, d_hidden=D, zero_init_output=False)
    return AMAGOLoss(te, tr, actor, head, action_space=asp, gammas=gammas, **loss_kw)


def make_batch(kind="discrete", B=3, T=8, seed=0, one_hot=False, pad_from=(None, 5, 2)):
    """Random batch; row b is padded from step pad_from[b] on (None = no padding)."""
    g = torch.Generator().manual_seed(seed)
    td = TensorDict({}, [B, T])
    for root, shift in (((), 0), (("next",), 1)):
        td.set(root + ("observation",), torch.randn(B, T, O, generator=g))
        td.set(root + ("prev_action",), torch.randn(B, T, A, generator=g))
        td.set(root + ("prev_reward",), torch.randn(B, T, 1, generator=g))
        td.set(root + ("time_idx",), (torch.arange(T) + shift).view(1, T, 1).expand(B, T, 1).clone())
    if kind == "discrete":
        idx = torch.randint(0, A, (B, T), generator=g)
        td.set("action", torch.nn.functional.one_hot(idx, A).bool() if one_hot else idx)
    elif kind == "multibinary":
        td.set("action", (torch.rand(B, T, A, generator=g) < 0.5).float())
    else:
        td.set("action", torch.rand(B, T, A, generator=g) * 2 - 1)
    td.set(("next", "reward"), torch.randn(B, T, 1, generator=g))
    td.set(("next", "prev_reward"), td["next", "reward"].clone())  # what make_amago_env writes
    term = torch.zeros(B, T, 1, dtype=torch.bool)
    term[0, 3] = True
    td.set(("next", "terminated"), term)
    mask = torch.ones(B, T, dtype=torch.bool)
    for b, p in enumerate(pad_from[:B]):
        if p is not None:
            mask[b, p:] = False
    td.set("mask", mask)
    return td


def grads(params):
    """{name: grad or None} for an iterable of (name, param)."""
    return {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in params}


def nonzero(gs) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in gs.values())
