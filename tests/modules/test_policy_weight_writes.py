"""A policy that has acted (σ-reparam W_hat and InputNorm constants cached) acts with weights written into it by any
means exactly as a fresh policy holding the same weights: writes through ``.data`` (no version counter sees them),
torch's foreach copies of ``.data``, a child's ``state_dict(keep_vars=True)``, a tensor replaced and then written,
and TorchRL's ``TrajectoryEncoderModule`` acting inside a ``TensorDictSequential``. Before the weight probe
(``modules/weight_cache.py``) the first writes left the policy 0.28 off here (2.26 in shared/reviews/interop.md, N02).
Caches are still reused between writes (the builds counter stays put)."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential

from torchrl_amago.modules import (ActorHead, AMAGOPolicy, MLPTimestepEncoder, TrajectoryEncoderModule,
                                   make_trajectory_encoder, weight_cache)
from torchrl_amago.spaces import ActionSpace

N, O, A = 5, 3, 4


def _policy() -> AMAGOPolicy:
    torch.manual_seed(0)
    space = ActionSpace("discrete", A)
    tstep = MLPTimestepEncoder({"observation": (O,)}, A, d_hidden=16, d_output=16)
    traj = make_trajectory_encoder("transformer", 16, 8, d_model=16, n_layers=2, n_heads=2)
    policy = AMAGOPolicy(tstep, traj, ActorHead(16, space, num_gammas=2, d_hidden=16), space, params_key="params")
    tstep.train()
    with torch.no_grad():  # InputNorm statistics away from their initial values
        for _ in range(3):
            tstep(_td(obs_scale=5.0))
    return policy.eval()


def _td(t: int = 0, obs_scale: float = 1.0) -> TensorDict:
    g = torch.Generator().manual_seed(t)
    return TensorDict(observation=torch.randn(N, O, generator=g) * obs_scale + 1, prev_action=torch.zeros(N, A),
                      prev_reward=torch.zeros(N, 1), time_idx=torch.full((N, 1), t),
                      is_init=torch.full((N, 1), t == 0), batch_size=[N])


def _acted(policy: AMAGOPolicy) -> torch.Tensor:
    """The actor outputs of 3 steps of one trial, from an empty memory."""
    policy.reset_state()
    with torch.no_grad():
        return torch.stack([policy(_td(t))["params"] for t in range(3)])


def _new_weights(module, buffers: bool = True) -> dict:
    """``module``'s state dict, its parameters (and float buffers) moved."""
    g, params = torch.Generator().manual_seed(1), dict(module.named_parameters())
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() and (buffers or k in params)
            else v for k, v in module.state_dict().items()}


def _write(policy: AMAGOPolicy, new: dict, how: str) -> None:
    params = dict(policy.named_parameters())  # parameters only: the policy's own buffer dict is never listed
    if how == "data":
        for k, p in params.items():
            p.data.copy_(new[k])
    elif how == "foreach":
        torch._foreach_copy_([p.data for p in params.values()], [new[k] for k in params])
    elif how == "keep_vars":  # buffers too (InputNorm's statistics, σ-reparam's vectors)
        for name in ("timestep_encoder", "trajectory_encoder", "actor_head"):
            for k, v in getattr(policy, name).state_dict(keep_vars=True).items():
                v.data.copy_(new[f"{name}.{k}"])
    elif how == "replaced_then_data":  # a new tensor (new storage, seen by the version key), then a .data write
        for k, p in params.items():
            p.data = new[k].clone() * 0.5
        _acted(policy)
        for k, p in params.items():
            p.data.copy_(new[k])


@pytest.mark.parametrize("how", ["data", "foreach", "keep_vars", "replaced_then_data"])
def test_an_acting_policy_sees_weights_written_in_place(how):
    policy = _policy()
    before = _acted(policy)
    builds = weight_cache._builds[0]
    torch.testing.assert_close(_acted(policy), before)
    assert weight_cache._builds[0] == builds  # no write: the caches were reused
    new = _new_weights(_policy(), buffers=how == "keep_vars")  # listing this policy's own buffers drops its caches
    _write(policy, new, how)
    fresh = _policy()
    fresh.load_state_dict(new)
    ours, ref = _acted(policy), _acted(fresh)
    assert not torch.allclose(ref, before, atol=1e-3)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_torchrl_trajectory_encoder_module_sees_data_writes():
    """Our Transformer acting through TrajectoryEncoderModule in a TorchRL TensorDictSequential, eval mode."""
    def build():
        torch.manual_seed(0)
        tstep = MLPTimestepEncoder({"observation": (O,)}, A, d_hidden=16, d_output=16)
        traj = make_trajectory_encoder("transformer", 16, 8, d_model=16, n_layers=1, n_heads=2)
        head = TensorDictModule(torch.nn.Linear(16, A), ["state_emb"], ["logits"])
        return TensorDictSequential(tstep, TrajectoryEncoderModule(traj), head).eval()  # no primer: an empty memory

    def act(module):
        with torch.no_grad():
            return module(_td().exclude("time_idx").set("time_idx", torch.zeros(N, 1, dtype=torch.long)))["logits"]

    module = build()
    act(module), act(module)
    new = _new_weights(module, buffers=False)
    for k, p in module.named_parameters():
        p.data.copy_(new[k])
    fresh = build()
    fresh.load_state_dict(new)
    torch.testing.assert_close(act(module), act(fresh), atol=1e-6, rtol=0)
