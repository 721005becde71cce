"""The acting hot-path shortcuts give the same numbers as the general code they bypass: ActorHead's discrete
sampler vs the Distribution, InputNorm's no-grad constant cache vs a fresh computation (and it follows updates),
AMAGOPolicy's cached mode switching (exact per-module flags restored) and its one-hot encoding."""
from __future__ import annotations

import contextlib

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.modules import ActorHead, AMAGOPolicy, InputNorm, MLPTimestepEncoder, make_trajectory_encoder
from torchrl_amago.modules.weight_cache import WeightProbe
from torchrl_amago.spaces import ActionSpace


def test_discrete_act_equals_distribution_sample_and_mode():
    head = ActorHead(8, ActionSpace("discrete", 5), num_gammas=3, d_hidden=16)
    for shape in [(64,), (3, 7)]:
        params = torch.randn(*shape, 3, 5) * 4
        torch.manual_seed(11)
        fast = head.act(params)
        torch.manual_seed(11)
        ref = head.dist(params[..., -1, :]).sample()
        assert fast.dtype == torch.int64 and fast.shape == shape
        assert torch.equal(fast, ref)
        assert torch.equal(head.act(params, deterministic=True), head.dist(params[..., -1, :]).mode)


@contextlib.contextmanager
def _probed(module):
    """A probed acting call (as AMAGOPolicy makes one): the only place acting caches are reused."""
    probe = WeightProbe(module)
    token = probe.enter()
    try:
        yield
    finally:
        probe.leave(token)


def test_input_norm_cached_constants_follow_updates():
    norm = InputNorm(3)
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]])
    norm.train()
    norm(x * 10)  # move the stats away from the init
    norm.eval()
    expected = norm.normalize(x)  # grad enabled: computed from scratch
    with torch.no_grad(), _probed(norm):
        assert torch.equal(norm(x), expected)
        cached = norm.__dict__["_norm_cache"]
        assert torch.equal(norm(x), expected) and norm.__dict__["_norm_cache"] is cached  # second call: from the cache
    norm.train()
    norm(x)  # in-place stat update bumps the buffers' versions
    norm.eval()
    fresh = norm.normalize(x)
    assert not torch.equal(fresh, expected)
    with torch.no_grad(), _probed(norm):
        assert torch.equal(norm(x), fresh)
        other = InputNorm(3)
        norm.load_state_dict(other.state_dict())  # back to mu=0, nu=1: x is unchanged (sigma ~ 1)
        torch.testing.assert_close(norm(x), x, atol=1e-4, rtol=0)


def _policy(one_hot: bool):
    torch.manual_seed(0)
    space = ActionSpace("discrete", 4, one_hot=one_hot)
    tstep = MLPTimestepEncoder({"observation": (3,)}, 4, d_hidden=16, d_output=16)
    traj = make_trajectory_encoder("transformer", 16, 8, d_model=16, n_layers=2, n_heads=2)
    return AMAGOPolicy(tstep, traj, ActorHead(16, space, num_gammas=2, d_hidden=16), space)


def _td(n=5, t=0):
    return TensorDict(observation=torch.randn(n, 3), prev_action=torch.zeros(n, 4), prev_reward=torch.zeros(n, 1),
                      time_idx=torch.full((n, 1), t), is_init=torch.full((n, 1), t == 0), batch_size=[n])


def test_policy_restores_exact_mixed_training_flags_and_acts_in_eval():
    policy = _policy(one_hot=False)
    policy.train()
    policy.trajectory_encoder.layers[0].eval()  # a mixed tree: some modules train, some eval
    before = {name: m.training for name, m in policy.named_modules()}
    seen = []
    hook = policy.trajectory_encoder.layers[1].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    policy(_td())
    hook.remove()
    assert seen == [False]  # acted in eval mode
    assert {name: m.training for name, m in policy.named_modules()} == before


def test_policy_one_hot_action_matches_index_action():
    td = _td()
    torch.manual_seed(3)
    idx = _policy(one_hot=False)(td.clone())["action"]
    torch.manual_seed(3)
    policy = _policy(one_hot=True)
    onehot = policy(td.clone())["action"]
    expected = policy.action_space.from_index(idx)  # the general encoding the policy's shortcut replaces
    assert onehot.shape == (5, 4) and onehot.dtype == expected.dtype
    assert torch.equal(onehot, expected) and (onehot.sum(-1) == 1).all()


def _steps(enc, x, is_init, time_idx):
    state, outs = enc.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        state = enc.reset_state(state, is_init[:, t])
        outs.append(enc.step(x[:, t], time_idx[:, t], state)[0])
    return torch.stack(outs, 1)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
@pytest.mark.parametrize("pos_emb", ["fixed", "learnable", "rope"])
def test_transformer_step_fast_path_equals_module_path_and_sequence_mode(pos_emb, device):
    """Eval + no-grad steps take the direct F.* path; grad-enabled steps the module path. Both must give
    sequence mode's numbers, across resets and past the ring buffer's capacity (S=6 < 20 steps). On CUDA the
    step attends over the whole ring (masked) instead of the valid prefix."""
    from torchrl_amago.modules.trajectory.transformer import TransformerTrajEncoder
    torch.manual_seed(0)
    enc = TransformerTrajEncoder(5, 6, d_model=16, n_heads=2, d_ff=32, n_layers=2, pos_emb=pos_emb,
                                 max_time_idx=64, attention="sdpa").eval().to(device)  # exact: flash is bf16
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 20, 5, generator=gen).to(device)
    is_init = torch.zeros(3, 20, dtype=torch.bool, device=device)
    is_init[:, 0], is_init[1, 9] = True, True
    time_idx = torch.arange(20, device=device).expand(3, 20).clone()
    time_idx[1, 9:] = torch.arange(11, device=device)
    calls = []
    hook = enc.layers[0].register_forward_pre_hook(lambda m, a: calls.append(1))
    module_path = _steps(enc, x, is_init, time_idx)  # grad enabled -> module path (the hook fires)
    assert len(calls) == 20
    with torch.no_grad():
        hooked = _steps(enc, x, is_init, time_idx)   # a hook forces the module path even under no_grad
        assert len(calls) == 40
        hook.remove()
        fast = _steps(enc, x, is_init, time_idx)
        assert len(calls) == 40  # the fast path bypassed the layer's __call__
        torch.testing.assert_close(fast, module_path.detach(), atol=1e-5, rtol=0)
        torch.testing.assert_close(hooked, module_path.detach(), atol=1e-5, rtol=0)
        for t in (4, 12, 19):  # trial of env 0: window of the last 6 tokens ending at t
            seq = enc(x[:1, :t + 1], time_idx[:1, :t + 1], window=6)[0, -1]
            torch.testing.assert_close(fast[0, t], seq, atol=1e-5, rtol=0)
