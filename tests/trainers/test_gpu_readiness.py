"""GPU code paths checked on a CPU-only machine: device flag, autocast dtype, FlashAttention / SDPA selection (with a
stand-in `flash_attn` module), Mamba's error, and acting on another device."""
from __future__ import annotations

import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from torchrl_amago._optional import available
from torchrl_amago.modules.trajectory import TransformerTrajEncoder
from torchrl_amago.trainers import AMAGOTrainer, TrainConfig
from torchrl_amago.trainers.scale.device import OnDevice, autocast_dtype, on_device
from torchrl_amago.trainers.scale.distributed import setup_distributed


def _fake_flash_attn(calls: list):
    """A stand-in for the flash-attn package: flash_attn_func on [B, T, H, D] (flash layout), computed by SDPA."""
    mod = types.ModuleType("flash_attn")

    def flash_attn_func(q, k, v, dropout_p=0.0, causal=False, window_size=(-1, -1)):
        calls.append({"dtype": q.dtype, "causal": causal, "window_size": window_size, "shape": tuple(q.shape)})
        out = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                             v.transpose(1, 2).float(), is_causal=causal)
        return out.transpose(1, 2).to(q.dtype)

    mod.flash_attn_func = flash_attn_func
    return mod


def test_attention_selection_with_flash_installed(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "flash_attn", _fake_flash_attn(calls))
    torch.manual_seed(0)
    kw = dict(d_model=32, n_heads=4, n_layers=2, dropout_ff=0.0, dropout_emb=0.0)
    auto = TransformerTrajEncoder(6, 16, attention="auto", **kw)
    sdpa = TransformerTrajEncoder(6, 16, attention="sdpa", **kw)
    flash = TransformerTrajEncoder(6, 16, attention="flash", **kw)
    sdpa.load_state_dict(auto.state_dict())
    flash.load_state_dict(auto.state_dict())
    cuda_like = types.SimpleNamespace(is_cuda=True)
    x, t = torch.randn(2, 10, 6), torch.arange(10).expand(2, 10)
    # 'auto': flash on CUDA tensors when installed, SDPA on CPU tensors; 'sdpa' never flash; 'flash' always
    assert auto._use_flash(cuda_like) and not auto._use_flash(x)
    assert not sdpa._use_flash(cuda_like) and flash._use_flash(x)
    want = sdpa(x, t)
    auto(x, t)
    assert calls == []  # CPU tensors: 'auto' stayed on SDPA
    got = flash(x, t)
    assert len(calls) == 2  # one call per layer, bf16 inputs, causal, no window
    assert all(c["dtype"] == torch.bfloat16 and c["causal"] and c["window_size"] == (-1, -1)
               and c["shape"] == (2, 10, 4, 8) for c in calls)
    assert got.dtype == torch.float32 and (got - want).abs().max() < 0.05  # bf16 attention vs fp32 SDPA
    calls.clear()
    flash(x, t, window=4)
    assert calls[0]["window_size"] == (3, 0)  # a sliding window of 4 keys: 3 back, none ahead


def test_autocast_dtype_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype("no", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp16", cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("bf16", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match="--mixed_precision bf16: the GPU cuda:0 has no bf16 support"):
        autocast_dtype("bf16", cuda)
    with pytest.raises(ValueError, match="--mixed_precision 'int8'"):
        autocast_dtype("int8", cpu)


def test_cuda_device_is_picked_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert setup_distributed("cuda:3", 60.0).device == torch.device("cuda", 3)
    ctx = setup_distributed("cuda", 60.0)
    assert ctx.device == torch.device("cuda") and not ctx.enabled


def test_mamba_without_its_package_is_a_clear_error_before_training(tmp_path):
    if available("mamba_ssm"):
        pytest.skip("mamba-ssm is installed")
    from tests.trainers.dist_worker import make_env

    cfg = TrainConfig(buffer_dir=str(tmp_path), traj_encoder="mamba", parallel_envs=2, memory_size=16,
                      progress_bar=False)
    with pytest.raises(ImportError, match="pip install mamba-ssm"):
        AMAGOTrainer(cfg, make_env, make_env)
    assert not os.path.exists(tmp_path / "amago" / "ckpts")


def test_on_device_wrapper_acts_like_the_policy():
    """The eval path for a learner on another device than its envs (CPU here: the wrapper must change nothing)."""
    from tests.trainers.dist_worker import make_env
    from torchrl_amago.trainers import build_agent_modules, build_policy

    env = make_env(3)
    cfg = TrainConfig(memory_size=16, memory_layers=1, n_heads=2, tstep_hidden=16, tstep_out=16, actor_hidden=16,
                      critic_hidden=16, max_seq_len=8)
    policy = build_policy(build_agent_modules(cfg, env.observation_spec, env.action_spec)).eval()
    assert on_device(policy, torch.device("cpu"), env.device) is policy  # same device: no wrapper
    outs = []
    for p in (policy.fresh_copy(), OnDevice(policy.fresh_copy(), "cpu")):
        env.set_seed(3)
        torch.manual_seed(0)
        outs.append(env.rollout(12, p, break_when_any_done=False))
    assert torch.equal(outs[0]["action"], outs[1]["action"]) and torch.equal(outs[0]["next", "reward"],
                                                                              outs[1]["next", "reward"])
