"""The stock trainer trains any LossModule (a user subclass of AMAGOLoss here) and any registered memory
(TorchRL's LSTMModule, a custom encoder chosen with --traj_encoder in an unedited example)."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.envs import TensorDictPrimer

from torchrl_amago.modules.trajectory import RecurrentSequenceModule, TrajectoryEncoder
from torchrl_amago.modules.trajectory.registry import ENCODERS, _REGISTRY, register_trajectory_encoder
from torchrl_amago.objectives import AMAGOLoss, masked_mean
from torchrl_amago.trainers import AMAGOTrainer, build_agent_modules

from ..examples.test_examples_smoke import TINY, example_config
from .test_trainer import _make_env, _tiny_cfg


class EntropyBonusLoss(AMAGOLoss):
    """A variant objective: AMAGO's plus an entropy bonus, returned as its own differentiable `loss_*` term."""

    bonus_coeff = 0.01

    def actor_loss(self, batch, states, dist, critic):
        self._entropy = masked_mean(dist.entropy(), batch.mask)  # same backbone pass as the other terms
        return super().actor_loss(batch, states, dist, critic)

    def forward(self, tensordict):
        out = super().forward(tensordict)
        out.set("loss_entropy", -self.bonus_coeff * self._entropy)
        return out


def test_total_loss_sums_every_differentiable_loss_entry():
    x = torch.ones((), requires_grad=True)
    out = TensorDict({"loss_a": 2 * x, "loss_b": 3 * x, "loss_detached": torch.tensor(100.0),
                      "actor_online": torch.tensor(7.0)}, [])
    assert AMAGOTrainer.total_loss(out).item() == 5.0
    with pytest.raises(ValueError, match="no differentiable 'loss_\\*' entry"):
        AMAGOTrainer.total_loss(out.exclude("loss_a", "loss_b"))


def test_stock_trainer_trains_a_user_loss(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny_cfg(tmp_path, epochs=2)
    env = _make_env(cfg.parallel_envs)
    modules = build_agent_modules(cfg, env.observation_spec, env.action_spec)
    env.close()
    loss = EntropyBonusLoss(modules.timestep_encoder, modules.trajectory_encoder, modules.actor, modules.critic,
                            action_space=modules.action_space, gammas=cfg.gammas)
    tr = AMAGOTrainer(cfg, _make_env, _make_env, modules=modules, loss=loss)
    try:
        assert tr.loss is loss and tr.learner.target_updater is not None
        assert {id(p) for p in tr.learner.params} == {id(p) for p in loss.parameters() if p.requires_grad}
        before = {k: v.clone() for k, v in loss.actor_head_params.items(True, True)}
        rec = tr.train()
        assert tr.grad_steps == 2 * cfg.grads_per_epoch
        assert "train-update/loss_entropy" in rec and rec["train-update/loss_entropy"] < 0
        assert any(not torch.equal(before[k], v) for k, v in loss.actor_head_params.items(True, True))
        batch = tr.sampler.sample()
        out = loss(batch)
        total = tr.total_loss(out)
        torch.testing.assert_close(total, out["loss_actor"] + out["loss_critic"] + out["loss_entropy"])
    finally:
        tr.close()


def test_trainer_with_torchrl_lstm_memory(tmp_path):
    torch.manual_seed(0)
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, traj_encoder="torchrl_lstm", epochs=2), _make_env, _make_env)
    try:
        assert isinstance(tr.loss.trajectory_encoder, RecurrentSequenceModule)
        assert any(isinstance(t, TensorDictPrimer) for t in tr.train_env.transform)  # the policy's state keys
        rec = tr.train()
        assert tr.grad_steps == 4 and torch.isfinite(torch.tensor(rec["train-update/loss_critic"]))
        assert "recurrent_state_h" in tr.replay.storage[:1].keys()  # collected like any TorchRL RNN policy
    finally:
        tr.close()


class RunningMean(TrajectoryEncoder):
    """A user's memory: causal running mean of a projection; step mode carries (sum, count) per env."""

    def __init__(self, input_dim, max_seq_len, d_model=32):
        super().__init__(input_dim, max_seq_len)
        self.proj = nn.Linear(input_dim, d_model)
        self.emb_dim = d_model

    def forward(self, x, time_idx):
        return self.proj(x).cumsum(1) / torch.arange(1, x.shape[1] + 1, device=x.device).view(1, -1, 1)

    def init_state(self, batch_size, device=None):
        return torch.zeros(batch_size, self.emb_dim, device=device), torch.zeros(batch_size, 1, device=device)

    def reset_state(self, state, is_init):
        keep = (~is_init.reshape(-1, 1)).float()
        return state[0] * keep, state[1] * keep

    def step(self, x, time_idx, state):
        total, count = state[0] + self.proj(x), state[1] + 1
        return total / count, (total, count)


def test_registered_encoder_is_selectable_in_an_unedited_example():
    register_trajectory_encoder("running_mean_test", RunningMean)
    try:
        _, cfg, kw, make_train = example_config("04_tmaze", TINY + ["--traj_encoder", "running_mean_test"])
        env = make_train(1)
        modules = build_agent_modules(cfg, env.observation_spec, env.action_spec)
        env.close()
        assert isinstance(modules.trajectory_encoder, RunningMean) and modules.trajectory_encoder.emb_dim == 16
    finally:
        _REGISTRY.pop("running_mean_test", None)
        ENCODERS.pop("running_mean_test", None)


def test_plugins_env_var_registers_before_parsing(tmp_path, monkeypatch):
    (tmp_path / "my_memory_plugin.py").write_text(
        "from tests.trainers.test_swap_parts import RunningMean\n"
        "from torchrl_amago.modules import register_trajectory_encoder\n"
        "register_trajectory_encoder('plugin_mean_test', RunningMean)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TORCHRL_AMAGO_PLUGINS", "my_memory_plugin")
    try:
        _, cfg, _, _ = example_config("04_tmaze", TINY + ["--traj_encoder", "plugin_mean_test"])
        assert cfg.traj_encoder == "plugin_mean_test"
    finally:
        _REGISTRY.pop("plugin_mean_test", None)
        ENCODERS.pop("plugin_mean_test", None)
    monkeypatch.setenv("TORCHRL_AMAGO_PLUGINS", "no_such_plugin_module")
    with pytest.raises(ImportError, match="TORCHRL_AMAGO_PLUGINS: cannot import plugin module 'no_such_plugin_module'"):
        example_config("04_tmaze", TINY)
