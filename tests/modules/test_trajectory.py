"""Trajectory encoders: step mode == sequence mode (with resets and a rolling cache), causality, padding,
σ-reparam numbers, positional-embedding errors, factory and optional-dependency errors."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.modules.trajectory import (
    FFTrajEncoder,
    GRUTrajEncoder,
    IdentityTrajEncoder,
    KVCacheState,
    LSTMTrajEncoder,
    SigmaReparam,
    TrajectoryEncoderModule,
    TransformerTrajEncoder,
    make_trajectory_encoder,
)

D_IN = 6
ATOL = 1e-5


def _transformer(max_seq_len, pos_emb="fixed", n_layers=2, **kw):
    return TransformerTrajEncoder(D_IN, max_seq_len, d_model=32, n_heads=4, d_ff=64, n_layers=n_layers,
                                  pos_emb=pos_emb, max_time_idx=256, **kw)


ENCODERS = {
    "tf_fixed": lambda s: _transformer(s, "fixed"),
    "tf_learnable": lambda s: _transformer(s, "learnable"),
    "tf_rope": lambda s: _transformer(s, "rope"),
    "gru": lambda s: GRUTrajEncoder(D_IN, s, d_hidden=24, n_layers=2, d_output=16),
    "lstm": lambda s: LSTMTrajEncoder(D_IN, s, d_hidden=24, n_layers=2, d_output=16),
    "ff": lambda s: FFTrajEncoder(D_IN, s, d_model=16, n_layers=2),
    "identity": lambda s: IdentityTrajEncoder(D_IN, s),
}


def _random_trials(n_envs: int, steps: int, gen: torch.Generator, p_reset: float = 0.15):
    """Inputs [N, T, D], is_init [N, T] (True at t=0 and at random points), time_idx counting from each reset."""
    x = torch.randn(n_envs, steps, D_IN, generator=gen)
    is_init = torch.rand(n_envs, steps, generator=gen) < p_reset
    is_init[:, 0] = True
    time_idx = torch.zeros(n_envs, steps, dtype=torch.long)
    for t in range(1, steps):
        time_idx[:, t] = torch.where(is_init[:, t], 0, time_idx[:, t - 1] + 1)
    return x, is_init, time_idx


def _run_steps(enc, x, is_init, time_idx):
    n, steps, _ = x.shape
    state = enc.init_state(n, x.device)
    outs = []
    for t in range(steps):
        state = enc.reset_state(state, is_init[:, t])
        out, state = enc.step(x[:, t], time_idx[:, t], state)
        outs.append(out)
    return torch.stack(outs, 1)


def _segments(is_init_row):
    starts = is_init_row.nonzero().squeeze(-1).tolist() + [len(is_init_row)]
    return list(zip(starts[:-1], starts[1:]))


# ------------------------------------------------------------------------------------ step == sequence
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_step_mode_matches_sequence_mode_per_trial(name):
    torch.manual_seed(0)
    enc = ENCODERS[name](32).eval()
    gen = torch.Generator().manual_seed(1)
    x, is_init, time_idx = _random_trials(3, 24, gen)
    assert sum(len(_segments(r)) for r in is_init) > 4  # several resets really happen
    stepped = _run_steps(enc, x, is_init, time_idx)
    with torch.no_grad():
        for b in range(x.shape[0]):
            for s, e in _segments(is_init[b]):
                seq = enc(x[b:b + 1, s:e], time_idx[b:b + 1, s:e])[0]
                torch.testing.assert_close(stepped[b, s:e], seq, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["tf_fixed", "tf_rope", "gru"])
def test_without_reset_the_context_leaks(name):
    """Guards the test above: skipping reset_state makes outputs after a reset differ from sequence mode."""
    torch.manual_seed(0)
    enc = ENCODERS[name](32).eval()
    gen = torch.Generator().manual_seed(2)
    x, is_init, time_idx = _random_trials(1, 12, gen, p_reset=0.0)
    is_init[0, 6] = True
    time_idx[0, 6:] = torch.arange(6)
    state = enc.init_state(1)
    outs = []
    for t in range(12):
        out, state = enc.step(x[:, t], time_idx[:, t], state)  # no reset
        outs.append(out)
    seq = enc(x[:, 6:], time_idx[:, 6:])
    assert (torch.stack(outs, 1)[:, 6:] - seq).abs().max() > 1e-3


@pytest.mark.parametrize("pos_emb", ["fixed", "learnable", "rope"])
def test_rolling_cache_one_layer_equals_window_ending_at_each_step(pos_emb):
    """A trial longer than max_seq_len: step t equals sequence mode on the window [t - S + 1, t]."""
    torch.manual_seed(0)
    S = 5
    enc = _transformer(S, pos_emb, n_layers=1).eval()
    gen = torch.Generator().manual_seed(3)
    x, is_init, time_idx = _random_trials(2, 23, gen, p_reset=0.0)
    is_init[1, 9] = True  # a reset mid-way, with a full stale cache behind it
    time_idx[1, 9:] = torch.arange(23 - 9)
    stepped = _run_steps(enc, x, is_init, time_idx)
    with torch.no_grad():
        for b in range(2):
            for s, e in _segments(is_init[b]):
                for t in range(s, e):
                    lo = max(s, t - S + 1)
                    seq = enc(x[b:b + 1, lo:t + 1], time_idx[b:b + 1, lo:t + 1])[0, -1]
                    torch.testing.assert_close(stepped[b, t], seq, atol=ATOL, rtol=0)
    # the cache really rolled (otherwise late steps would see the whole trial)
    full = enc(x[:1], time_idx[:1])[0]
    assert (stepped[0, S:] - full[S:]).abs().max() > 1e-3


@pytest.mark.parametrize("pos_emb", ["fixed", "learnable", "rope"])
def test_rolling_cache_multilayer_equals_sliding_window_sequence_mode(pos_emb):
    """With several layers the cached keys of old tokens carry context from before the window (as in the
    original's rolling cache), so step mode equals sliding-window attention (window = max_seq_len) per layer."""
    torch.manual_seed(0)
    S = 4
    enc = _transformer(S, pos_emb, n_layers=3).eval()
    gen = torch.Generator().manual_seed(4)
    x, is_init, time_idx = _random_trials(3, 26, gen, p_reset=0.08)
    stepped = _run_steps(enc, x, is_init, time_idx)
    assert any(e - s > S for r in is_init for s, e in _segments(r))
    with torch.no_grad():
        for b in range(3):
            for s, e in _segments(is_init[b]):
                seq = enc(x[b:b + 1, s:e], time_idx[b:b + 1, s:e], window=S)[0]
                torch.testing.assert_close(stepped[b, s:e], seq, atol=ATOL, rtol=0)


def test_kv_cache_bookkeeping():
    enc = _transformer(4).eval()
    state = enc.init_state(3)
    assert isinstance(state, KVCacheState)
    assert state.k.shape == (2, 3, 4, 4, 8) and state.v.shape == state.k.shape
    x = torch.randn(3, D_IN)
    for t in range(6):
        _, state = enc.step(x, torch.full((3,), t), state)
    assert state.valid_len().tolist() == [4, 4, 4] and state.lengths.tolist() == [6, 6, 6]
    state = enc.reset_state(state, torch.tensor([[False], [True], [False]]))
    assert state.valid_len().tolist() == [4, 0, 4]
    with pytest.raises(ValueError, match="is_init"):
        enc.reset_state(state, torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="3 envs"):
        enc.step(torch.randn(2, D_IN), torch.zeros(2, dtype=torch.long), state)


# ------------------------------------------------------------------------------------ causality / padding
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_causality_and_right_padding(name):
    torch.manual_seed(0)
    enc = ENCODERS[name](32).eval()
    B, T, t0 = 2, 12, 6
    x = torch.randn(B, T, D_IN)
    time_idx = torch.arange(T).expand(B, T)
    with torch.no_grad():
        base = enc(x, time_idx)
        x2 = x.clone()
        x2[:, t0 + 1:] = torch.randn(B, T - t0 - 1, D_IN) * 10
        changed = enc(x2, time_idx)
        torch.testing.assert_close(changed[:, :t0 + 1], base[:, :t0 + 1], atol=ATOL, rtol=0)
        if name != "identity" and name != "ff":
            assert (changed[:, t0 + 1:] - base[:, t0 + 1:]).abs().max() > 1e-4  # later steps do see them
        # right padding (arbitrary values, AMAGO-style pad time index 4) leaves valid outputs alone
        padded_x = torch.cat([x[:, :t0 + 1], torch.full((B, 5, D_IN), 4.0)], 1)
        padded_t = torch.cat([time_idx[:, :t0 + 1], torch.full((B, 5), 4)], 1)
        short = enc(x[:, :t0 + 1], time_idx[:, :t0 + 1])
        torch.testing.assert_close(enc(padded_x, padded_t)[:, :t0 + 1], short, atol=ATOL, rtol=0)


def test_positions_come_from_absolute_time_idx():
    torch.manual_seed(0)
    enc = _transformer(16).eval()
    x = torch.randn(1, 5, D_IN)
    with torch.no_grad():
        a = enc(x, torch.arange(5)[None])
        b = enc(x, torch.arange(5)[None] + 7)
    assert (a - b).abs().max() > 1e-3


# ------------------------------------------------------------------------------------ σ-reparam
def test_sigma_reparam_hand_computed():
    lin = SigmaReparam(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.5, -1.0]))
        lin.u.copy_(torch.tensor([1.0, 0.0]))
        lin.v.copy_(torch.tensor([1.0, 1.0]) / math.sqrt(2))
        lin.gamma.fill_(3.0)
    x = torch.tensor([[1.0, 2.0]])
    lin.train()
    out = lin(x)
    # u = normalize(W v) = [2, 1]/sqrt5 ; v = normalize(W^T u) = [4, 1]/sqrt17 ; sigma = u^T W v = 17/sqrt85
    torch.testing.assert_close(lin.u, torch.tensor([2.0, 1.0]) / math.sqrt(5))
    torch.testing.assert_close(lin.v, torch.tensor([4.0, 1.0]) / math.sqrt(17))
    sigma = 17 / math.sqrt(85)
    torch.testing.assert_close(lin.sigma(), torch.tensor(sigma))
    # out = (gamma / sigma) * W x + b = 3/sigma * [2, 2] + [0.5, -1]
    expect = torch.tensor([[3 / sigma * 2 + 0.5, 3 / sigma * 2 - 1.0]])
    torch.testing.assert_close(out, expect)
    # eval: no power iteration, stored u, v are reused
    lin.eval()
    u, v = lin.u.clone(), lin.v.clone()
    torch.testing.assert_close(lin(x), expect)
    assert torch.equal(lin.u, u) and torch.equal(lin.v, v)
    # a second training forward does iterate again: u <- normalize(W v) = [8, 1]/sqrt65
    lin.train()
    lin(x)
    torch.testing.assert_close(lin.u, torch.tensor([8.0, 1.0]) / math.sqrt(65))


def test_sigma_reparam_eval_cache_follows_in_place_updates():
    """Acting (eval + no_grad) reuses W_hat, but an in-place optimizer step or load_state_dict invalidates it."""
    torch.manual_seed(0)
    lin = SigmaReparam(4, 3).eval()
    x = torch.randn(2, 4)
    with torch.no_grad():
        lin(x)
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.effective_weight(), lin.bias))
        lin.weight.add_(0.1 * torch.randn_like(lin.weight))  # like optimizer.step()
        lin.gamma.mul_(2.0)
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.effective_weight(), lin.bias))
        other = SigmaReparam(4, 3)
        lin.load_state_dict(other.state_dict())
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, other.effective_weight(), other.bias))


def test_sigma_reparam_init_and_gradients():
    torch.manual_seed(0)
    lin = SigmaReparam(16, 8)
    assert lin.weight.std().item() == pytest.approx(0.02, rel=0.25)
    top = torch.linalg.svdvals(lin.weight.detach())[0]
    lin.eval()
    torch.testing.assert_close(lin.sigma().abs(), top, atol=1e-5, rtol=1e-4)  # exact SVD at init
    assert {n for n, _ in lin.named_buffers()} == {"u", "v"}
    assert lin.gamma.item() == 1.0 and lin.gamma.requires_grad
    lin(torch.randn(4, 16)).sum().backward()
    assert lin.weight.grad is not None and lin.gamma.grad is not None
    assert lin.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ pos-emb errors
def test_learnable_pos_emb_errors():
    enc = TransformerTrajEncoder(D_IN, 8, d_model=16, n_heads=2, d_ff=32, n_layers=1, pos_emb="learnable",
                                 max_time_idx=10).eval()
    x = torch.randn(1, 3, D_IN)
    enc(x, torch.tensor([[7, 8, 9]]))  # in range
    with pytest.raises(ValueError, match="max_time_idx=10"):
        enc(x, torch.tensor([[8, 9, 10]]))
    with pytest.raises(ValueError, match="max_time_idx"):
        enc.step(x[:, 0], torch.tensor([10]), enc.init_state(1))
    with pytest.raises(ValueError, match="max_time_idx"):
        TransformerTrajEncoder(D_IN, 8, d_model=16, n_heads=2, n_layers=1, pos_emb="learnable")
    with pytest.raises(ValueError, match="pos_emb"):
        TransformerTrajEncoder(D_IN, 8, d_model=16, n_heads=2, n_layers=1, pos_emb="learned")


# ------------------------------------------------------------------------------------ sizes vs original
def test_parameter_counts_match_original_defaults():
    def count(m):
        return sum(p.numel() for p in m.parameters())
    assert count(TransformerTrajEncoder(256, 128)) == 2_440_996
    assert count(GRUTrajEncoder(256, 128)) == 855_808
    assert count(FFTrajEncoder(256, 128)) == 657_664


# ------------------------------------------------------------------------------------ module / factory / errors
def test_trajectory_encoder_module_on_tensordict():
    torch.manual_seed(0)
    enc = _transformer(16).eval()
    mod = TrajectoryEncoderModule(enc, default_recurrent_mode=True)  # sequence mode outside a loss too
    B, T = 2, 5
    td = TensorDict({"tstep_emb": torch.randn(B, T, D_IN),
                     "time_idx": torch.arange(T).expand(B, T).unsqueeze(-1).clone()}, batch_size=[B, T])
    out = mod(td)
    state = ["recurrent_state_k", "recurrent_state_v", "recurrent_state_length"]
    assert mod.in_keys == ["tstep_emb", "time_idx", *state, "is_init"]
    assert mod.out_keys == ["state_emb", *(("next", k) for k in state)]
    torch.testing.assert_close(out["state_emb"], enc(td["tstep_emb"], td["time_idx"].squeeze(-1)))
    bad = TensorDict({"tstep_emb": torch.randn(B, T, D_IN), "time_idx": torch.zeros(B, T, 2, dtype=torch.long)},
                     batch_size=[B, T])
    with pytest.raises(ValueError, match="time_idx"):
        mod(bad)


def test_factory_and_input_errors():
    e = make_trajectory_encoder("transformer", D_IN, 8, d_model=32, n_layers=1, n_heads=4)
    assert isinstance(e, TransformerTrajEncoder) and e.emb_dim == 32 and len(e.layers) == 1
    assert e.layers[0].ff1.out_features == 128  # d_ff = 4 * d_model, as the original's CLI helper
    assert isinstance(make_trajectory_encoder("rnn", D_IN, 8, d_model=16), GRUTrajEncoder)
    assert make_trajectory_encoder("lstm", D_IN, 8, d_model=16).emb_dim == 16
    assert make_trajectory_encoder("identity", D_IN, 8).emb_dim == D_IN
    assert make_trajectory_encoder("ff", D_IN, 8, d_model=16, n_layers=3).emb_dim == 16
    with pytest.raises(ValueError, match="unknown trajectory encoder"):
        make_trajectory_encoder("lstmformer", D_IN, 8)
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        e(torch.randn(3, D_IN), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="time_idx"):
        e(torch.randn(2, 3, D_IN), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="input_dim"):
        e(torch.randn(2, 3, D_IN + 1), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        TransformerTrajEncoder(D_IN, 8, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="attention"):
        TransformerTrajEncoder(D_IN, 8, d_model=32, n_heads=4, attention="xformers")


def test_optional_dependencies_raise_clear_import_errors():
    from torchrl_amago._optional import available
    if not available("mamba_ssm"):
        with pytest.raises(ImportError, match="mamba-ssm"):
            make_trajectory_encoder("mamba", D_IN, 8)
    if not available("flash_attn"):
        with pytest.raises(ImportError, match="flash-attn"):
            TransformerTrajEncoder(D_IN, 8, d_model=32, n_heads=4, attention="flash")
        # 'auto' without the package falls back to SDPA silently
        enc = TransformerTrajEncoder(D_IN, 8, d_model=32, n_heads=4, n_layers=1, attention="auto")
        assert enc(torch.randn(1, 2, D_IN), torch.zeros(1, 2, dtype=torch.long)).shape == (1, 2, 32)


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    enc = _transformer(16)
    x, t = torch.randn(2, 6, D_IN), torch.arange(6).expand(2, 6)
    enc.train()
    assert (enc(x, t) - enc(x, t)).abs().max() > 1e-4
    enc.eval()
    torch.testing.assert_close(enc(x, t), enc(x, t))
