"""Every registered trajectory encoder (and the timestep encoder) can run twice in one autograd graph in training mode,
as when an actor and a critic share it under TorchRL's ClipPPOLoss / A2CLoss, and the gradient equals the two calls'
gradients taken one at a time. Before σ-reparam kept copies of its power-iteration vectors for autograd (as torch's
spectral_norm does), the Transformer raised "modified by an inplace operation" (shared/reviews/interop.md, N10)."""
from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.modules import MLPTimestepEncoder, as_sequence_module, make_trajectory_encoder
from torchrl_amago.modules.trajectory import trajectory_encoder_names

ENCODERS = [n for n in trajectory_encoder_names() if n != "mamba"]  # mamba-ssm: CUDA only
B, T, D = 2, 5, 8


def _encoder(name: str):
    kw = {"n_heads": 2, "dropout_ff": 0.0, "dropout_emb": 0.0} if name == "transformer" else {}
    return as_sequence_module(make_trajectory_encoder(name, D, max_seq_len=8, d_model=16, n_layers=1, **kw)).train()


def _call(module, x: torch.Tensor) -> torch.Tensor:
    td = TensorDict({"tstep_emb": x, "time_idx": torch.arange(T).expand(B, T).unsqueeze(-1),
                     "is_init": torch.zeros(B, T, 1, dtype=torch.bool)}, [B, T])
    return module(td)["state_emb"]


def _grads(module, x):
    return [x.grad] + [p.grad for p in module.parameters() if p.requires_grad]


@pytest.mark.parametrize("name", ENCODERS)
def test_trajectory_encoder_twice_in_one_graph(name):
    torch.manual_seed(0)
    joint, x = _encoder(name), torch.randn(B, T, D)
    alone = copy.deepcopy(joint)
    xj, xa = x.clone().requires_grad_(), x.clone().requires_grad_()
    (_call(joint, xj).sum() + _call(joint, xj).square().sum()).backward()
    _call(alone, xa).sum().backward()  # the same two calls, each backpropagated before the next runs
    _call(alone, xa).square().sum().backward()
    assert xj.grad.abs().sum() > 0
    for g_joint, g_alone in zip(_grads(joint, xj), _grads(alone, xa)):
        torch.testing.assert_close(g_joint, g_alone, atol=1e-5, rtol=1e-5)


def test_timestep_encoder_twice_in_one_graph():
    """InputNorm updates its statistics in place in training mode: the first call's graph must not need them."""
    torch.manual_seed(0)
    tstep = MLPTimestepEncoder({"observation": (3,)}, 4, d_hidden=16, d_output=16).train()
    td = TensorDict(observation=torch.randn(B, T, 3) * 4 + 1, prev_action=torch.zeros(B, T, 4),
                    prev_reward=torch.randn(B, T, 1), batch_size=[B, T])
    (tstep(td.clone())["tstep_emb"].sum() + tstep(td.clone())["tstep_emb"].square().sum()).backward()
    assert all(p.grad is not None for p in tstep.parameters() if p.requires_grad)
