"""AMAGOLoss's TorchRL surface: in_keys / out_keys, loss-only `loss_*` names, SoftUpdate at any time, the
training sequence's `is_init`, adapting an assigned encoder, and a subclass overriding one step."""
from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.objectives import SoftUpdate

from torchrl_amago.modules.trajectory import GRUTrajEncoder, TrajectoryEncoderModule
from torchrl_amago.objectives import AMAGOLoss

from ._build import D, build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


@pytest.mark.parametrize("kind, critic, kw", [("discrete", "auto", {}), ("discrete", "auto", {"cql_coeff": 0.1}),
                                              ("continuous", "auto", {}),
                                              ("discrete", "two_hot", {"online_coeff": 0.0}),
                                              ("multibinary", "auto", {"online_coeff": 0.0, "offline_coeff": 0.5})])
def test_out_keys_are_exactly_what_forward_writes(kind, critic, kw):
    loss = build(kind, critic, **kw)
    out = loss(make_batch(kind))
    assert sorted(out.keys()) == sorted(loss.out_keys)
    assert loss.out_keys[:2] == ["loss_actor", "loss_critic"]
    # TorchRL's Trainer sums every key starting with "loss": only the two differentiable terms may
    loss_like = [k for k in out.keys() if k.startswith("loss")]
    assert sorted(loss_like) == ["loss_actor", "loss_critic"]
    assert all(out[k].requires_grad for k in loss_like)
    assert not any(out[k].requires_grad for k in out.keys() if k not in loss_like)


def test_in_keys_are_exactly_what_forward_reads():
    td = make_batch("discrete")
    td["unused"] = torch.zeros(3, 8)
    loss = build("discrete")
    keys = loss.in_keys
    assert "unused" not in keys and ("next", "observation") in keys and ("next", "is_init") in keys
    torch.manual_seed(0)
    ref = loss(td).detach()
    present = [k for k in keys if k in td.keys(True)]  # ("next", "is_init") is optional and absent here
    loss = build("discrete")
    torch.manual_seed(0)
    out = loss(td.select(*present))
    for key in ref.keys():
        torch.testing.assert_close(out[key], ref[key], msg=key)
    for key in present:  # each required key is really read (mask is optional: all-valid when absent)
        if key == "mask":
            continue
        with pytest.raises((KeyError, ValueError)):
            build("discrete")(td.exclude(key))


def test_in_keys_follow_set_keys():
    loss = build("discrete")
    loss.set_keys(prev_action="pa", reward=("next", "rew"))
    assert "pa" in loss.in_keys and ("next", "pa") in loss.in_keys and ("next", "rew") in loss.in_keys
    assert "prev_action" not in loss.in_keys


def test_soft_update_created_after_the_first_call():
    """Stock TorchRL losses have no ordering rule; neither does this one (issue 15)."""
    loss = build("discrete")
    opt = torch.optim.AdamW(loss.parameters(), lr=1e-2)
    for seed in range(2):
        out = loss(make_batch("discrete", seed=seed))
        opt.zero_grad()
        (out["loss_actor"] + out["loss_critic"]).backward()
        opt.step()
    targets = [loss.target_actor_head_params, loss.target_critic_head_params]
    assert all(not p.requires_grad and not isinstance(p, nn.Parameter) for t in targets for p in t.values(True, True))
    updater = SoftUpdate(loss, tau=0.1)  # TorchRL's updaters start the targets from the online weights
    sources = [loss.actor_head_params, loss.critic_head_params]
    for t, s in zip(targets, sources):
        assert all(torch.equal(val, s[key].detach()) for key, val in t.items(True, True))
    before = [t.clone() for t in targets]
    out = loss(make_batch("discrete", seed=2))
    opt.zero_grad()
    (out["loss_actor"] + out["loss_critic"]).backward()
    opt.step()
    updater.step()
    for t, b, s in zip(targets, before, sources):
        for key, val in t.items(True, True):
            torch.testing.assert_close(val, 0.9 * b[key] + 0.1 * s[key].detach())
    out = loss(make_batch("discrete", seed=3))  # and the loss still runs after the update
    assert torch.isfinite(out["loss_critic"])


def test_training_sequence_carries_is_init():
    """Position 0 starts a fresh memory; a trial that starts inside the window (next/is_init) resets it too;
    padding is never an init."""
    loss = build("discrete")
    td = make_batch("discrete", pad_from=(None, 5, 2))
    nxt_init = torch.zeros(3, 8, 1, dtype=torch.bool)
    nxt_init[0, 3] = True  # row 0: a new trial's first observation is next[3] = sequence position 4
    nxt_init[1, 6] = True  # row 1: padded from step 5 -> ignored
    td["next", "is_init"] = nxt_init
    seq = loss._sequence(td, td["mask"])
    expected = torch.zeros(3, 9, dtype=torch.bool)
    expected[:, 0] = True
    expected[0, 4] = True
    assert torch.equal(seq["is_init"].squeeze(-1), expected)


def test_assigning_a_bare_encoder_to_the_loss():
    loss = build("discrete", encoder="gru")
    gru = GRUTrajEncoder(D, 64, d_hidden=D, d_output=D, n_layers=1)
    loss.trajectory_encoder = gru  # a bare TrajectoryEncoder: wrapped, not a missing-"time_idx" failure
    assert isinstance(loss.trajectory_encoder, TrajectoryEncoderModule) and loss.trajectory_encoder.encoder is gru
    out = loss(make_batch("discrete"))
    out["loss_critic"].backward()
    assert gru.rnn.weight_ih_l0.grad is not None and gru.rnn.weight_ih_l0.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"torchrl\.modules\.GRUModule"):
        loss.trajectory_encoder = nn.GRU(D, D, batch_first=True)
    with pytest.raises(ValueError, match="TensorDictModule"):
        loss.trajectory_encoder = nn.Linear(D, D)


def test_feed_forward_tensordict_module_as_the_memory():
    loss = build("discrete")
    ff = TensorDictModule(nn.Sequential(nn.Linear(D, D), nn.Tanh()), in_keys=["tstep_emb"], out_keys=["state_emb"])
    loss.trajectory_encoder = ff
    assert loss.trajectory_encoder is ff
    out = loss(make_batch("discrete"))
    out["loss_actor"].backward()
    assert ff.module[0].weight.grad.abs().sum() > 0


class ConservativeActorLoss(AMAGOLoss):
    """A variant actor objective: the stock one plus beta * E[log pi(a_buffer|s)^2] (a made-up regulariser)."""

    beta = 0.5

    def actor_loss(self, batch, states, dist, critic):
        loss, terms = super().actor_loss(batch, states, dist, critic)
        G = self.gammas.numel()
        logp = dist.log_prob(batch.action_index.unsqueeze(-1).expand(*batch.mask.shape, G))
        extra = torch.where(batch.mask.unsqueeze(-1), logp.square(), 0.0).sum() / (batch.mask.sum() * G)
        return loss + self.beta * extra, terms


def test_subclass_overrides_one_step_and_keeps_the_others():
    td = make_batch("discrete")
    base, variant = build("discrete"), build("discrete")
    variant.__class__ = ConservativeActorLoss
    torch.manual_seed(0)
    ref = base(td)
    torch.manual_seed(0)
    out = variant(td)
    torch.testing.assert_close(out["loss_critic"], ref["loss_critic"], rtol=0, atol=0)  # same critic step
    assert out["loss_actor"].item() > ref["loss_actor"].item()  # the extra term is positive


class ShiftedTargets(AMAGOLoss):
    """A variant critic target: the stock one plus 1 (a made-up shift)."""

    def critic_target(self, batch, states, policy):
        return super().critic_target(batch, states, policy) + 1.0


def test_forward_uses_an_overridden_public_step():
    """forward calls the public steps by name, so a subclass that replaces one (here the critic target) changes what
    forward computes and nothing upstream of that step."""
    td = make_batch("discrete")
    base, variant = build("discrete"), build("discrete")
    variant.__class__ = ShiftedTargets
    torch.manual_seed(0)
    ref = base(td.clone())
    torch.manual_seed(0)
    out = variant(td.clone())
    assert out["td_target_max"].item() == pytest.approx(ref["td_target_max"].item() + 1.0, rel=1e-6)
    assert out["td_target_min"].item() == pytest.approx(ref["td_target_min"].item() + 1.0, rel=1e-6)
    assert out["reward_mean"].item() == ref["reward_mean"].item()
    assert out["loss_critic"].item() != pytest.approx(ref["loss_critic"].item(), rel=1e-4)
