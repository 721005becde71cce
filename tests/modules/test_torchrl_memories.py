"""TorchRL's own memories (LSTMModule / GRUModule, a feed-forward TensorDictModule) as AMAGO's trajectory
encoder: step mode in the acting policy (state in TensorDict keys, primer on the env) == the sequence mode the
loss runs, across trial boundaries; and the trajectory-encoder registry."""
from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.modules import ActorHead, AMAGOPolicy, MLPTimestepEncoder, make_trajectory_encoder
from torchrl_amago.modules.trajectory import (
    ENCODERS, TrajectoryEncoder, as_sequence_module, encoder_emb_dim, register_trajectory_encoder,
    trajectory_encoder_names)
from torchrl_amago.modules.trajectory.registry import _REGISTRY
from torchrl_amago.spaces import action_space_from_spec

D = 16


def _policy_and_env(memory):
    torch.manual_seed(0)
    env = make_amago_env(TMaze(3, corridor_length=2, seed=0))  # trials of 3 steps: is_init inside an 8-step window
    space = action_space_from_spec(env.action_spec)
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=D, d_output=D)
    actor = ActorHead(encoder_emb_dim(memory), space, num_gammas=2, d_hidden=D)
    policy = AMAGOPolicy(tstep, memory, actor, space)
    primer = policy.make_tensordict_primer()
    if primer is not None:
        env.append_transform(primer)
    return env, policy, tstep, actor


def _step_vs_sequence(memory, steps=8):
    env, policy, tstep, actor = _policy_and_env(memory)
    seen = []
    actor.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))  # step-mode state_emb
    data = env.rollout(steps, policy, break_when_any_done=False)
    assert data["is_init"][:, 1:].any()  # a new trial starts inside the window
    step_emb = torch.stack(seen, 1)
    tstep.eval()  # as while acting: InputNorm statistics frozen
    seq = tstep(data.clone())
    seq["is_init"] = data["is_init"]
    with torch.no_grad():
        seq_emb = as_sequence_module(memory)(seq)["state_emb"]
    return step_emb, seq_emb, data


@pytest.mark.parametrize("name", ["torchrl_lstm", "torchrl_gru"])
def test_torchrl_recurrent_module_step_equals_sequence(name):
    memory = make_trajectory_encoder(name, D, 8, d_model=D, n_layers=2)
    step_emb, seq_emb, data = _step_vs_sequence(memory)
    torch.testing.assert_close(step_emb, seq_emb, atol=1e-5, rtol=1e-5)
    # the state lives in TensorDict keys: the primer's zeros on reset steps, else the previous step's output
    key = memory.in_keys[1]  # recurrent_state_h (LSTM) / recurrent_state (GRU)
    h, init = data[key], data["is_init"].squeeze(-1)
    assert (h[init] == 0).all() and h[~init].abs().sum() > 0
    carried = ~init[:, 1:]
    assert torch.equal(data["next", key][:, :-1][carried], h[:, 1:][carried])


def test_feed_forward_tensordict_module_step_equals_sequence():
    ff = TensorDictModule(nn.Sequential(nn.Linear(D, D), nn.Tanh()), in_keys=["tstep_emb"], out_keys=["state_emb"])
    ff.emb_dim = D
    step_emb, seq_emb, _ = _step_vs_sequence(ff)
    torch.testing.assert_close(step_emb, seq_emb, atol=1e-6, rtol=1e-6)


def test_policy_rejects_what_it_cannot_run_with_the_wrapper_to_use():
    env = make_amago_env(TMaze(2, corridor_length=2, seed=0))
    space = action_space_from_spec(env.action_spec)
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=D, d_output=D)
    actor = ActorHead(D, space, num_gammas=2, d_hidden=D)
    with pytest.raises(ValueError, match=r"LSTMModule\(lstm=\.\.\., in_key='tstep_emb'"):
        AMAGOPolicy(tstep, nn.LSTM(D, D, batch_first=True), actor, space)
    from torchrl.modules import LSTMModule

    wrong = LSTMModule(input_size=D, hidden_size=D, in_key="embed", out_key="state_emb")
    with pytest.raises(ValueError, match="in_key='tstep_emb'"):
        AMAGOPolicy(tstep, wrong, actor, space)


class TinyMemory(TrajectoryEncoder):
    """A custom encoder: causal running mean of a projection (stateful in step mode)."""

    def __init__(self, input_dim, max_seq_len, d_model=8):
        super().__init__(input_dim, max_seq_len)
        self.proj = nn.Linear(input_dim, d_model)
        self.emb_dim = d_model

    def forward(self, x, time_idx):
        h = self.proj(x)
        return h.cumsum(1) / torch.arange(1, x.shape[1] + 1, device=x.device).view(1, -1, 1)


def test_register_trajectory_encoder():
    assert {"transformer", "gru", "lstm", "ff", "torchrl_lstm", "torchrl_gru"} <= set(trajectory_encoder_names())
    try:
        register_trajectory_encoder("tiny_memory_test", TinyMemory)
        assert "tiny_memory_test" in trajectory_encoder_names() and ENCODERS["tiny_memory_test"] is TinyMemory
        enc = make_trajectory_encoder("tiny_memory_test", 5, 10, d_model=12, n_layers=3)  # n_layers: not accepted
        assert isinstance(enc, TinyMemory) and enc.emb_dim == 12
        from torchrl_amago.trainers import TrainConfig

        assert TrainConfig(traj_encoder="tiny_memory_test").traj_encoder == "tiny_memory_test"
        with pytest.raises(ValueError, match="already registered"):
            register_trajectory_encoder("tiny_memory_test", nn.Linear)
    finally:
        _REGISTRY.pop("tiny_memory_test", None)
        ENCODERS.pop("tiny_memory_test", None)
    from torchrl_amago.trainers import TrainConfig

    with pytest.raises(ValueError, match="--traj_encoder='tiny_memory_test' is not one of"):
        TrainConfig(traj_encoder="tiny_memory_test")
    with pytest.raises(ValueError, match="register_trajectory_encoder"):
        make_trajectory_encoder("tiny_memory_test", 5, 10)
