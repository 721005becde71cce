"""`AMAGOSoftUpdate`: the heads' target copies move at `tau`, the encoders' copy at `backbone_tau`."""
import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.objectives import SoftUpdate

from torchrl_amago.objectives import DEFAULT_BACKBONE_TAU, AMAGOSoftUpdate

from ._build import D, build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def _snapshot(tds):
    return {name: {k: v.detach().clone() for k, v in td.items(True, True)} for name, td in tds.items()}


def _groups(loss):
    return {"actor": (loss.actor_head_params, loss.target_actor_head_params),
            "critic": (loss.critic_head_params, loss.target_critic_head_params),
            "backbone": (loss.backbone_params, loss.target_backbone_params)}


@pytest.mark.parametrize("backbone_tau, want", [(0.25, 0.25), (None, 0.1)])
def test_heads_move_at_tau_and_the_encoders_copy_at_backbone_tau(backbone_tau, want):
    loss = build(encoder="gru", target_encoders=True)
    updater = AMAGOSoftUpdate(loss, tau=0.1, backbone_tau=backbone_tau)
    with torch.no_grad():  # move every online weight away from its target copy
        for p in loss.parameters():
            if p.requires_grad:
                p.add_(1.0)
    groups = _groups(loss)
    online = _snapshot({n: src for n, (src, _) in groups.items()})
    before = _snapshot({n: tgt for n, (_, tgt) in groups.items()})
    updater.step()
    rates = {"actor": 0.1, "critic": 0.1, "backbone": want}
    for name, (_, target) in groups.items():
        assert before[name]
        for k, v in target.items(True, True):
            w = rates[name]
            torch.testing.assert_close(v, (1 - w) * before[name][k] + w * online[name][k], msg=f"{name} {k}")


def test_without_target_encoders_it_is_soft_update():
    plain, ours = build(), build()
    for loss, updater in ((plain, SoftUpdate(plain, tau=0.1)), (ours, AMAGOSoftUpdate(ours, tau=0.1))):
        with torch.no_grad():
            for p in loss.parameters():
                if p.requires_grad:
                    p.mul_(2.0)
        updater.step()
    for a, b in ((plain.target_critic_head_params, ours.target_critic_head_params),
                 (plain.target_actor_head_params, ours.target_actor_head_params)):
        for k, v in a.items(True, True):
            assert torch.equal(v, b[k]), k
    assert DEFAULT_BACKBONE_TAU == AMAGOSoftUpdate(build(target_encoders=True), tau=0.1).backbone_tau


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_bad_backbone_tau_is_named(bad):
    with pytest.raises(ValueError, match=rf"backbone_tau={bad}: must be in \(0, 1\]"):
        AMAGOSoftUpdate(build(target_encoders=True), tau=0.1, backbone_tau=bad)


def test_a_swapped_memory_gets_its_own_target_copy():
    """Assigning another trajectory encoder to a loss with a target backbone copies the new encoder, so the TD
    targets read the new memory's weights (at first the same as the online ones) and the updater moves them."""
    loss = build(target_encoders=True)
    ff = TensorDictModule(nn.Sequential(nn.Linear(D, D), nn.Tanh()), in_keys=["tstep_emb"], out_keys=["state_emb"])
    loss.trajectory_encoder = ff
    keys = set(loss.target_backbone_params.keys(True, True))
    assert keys == set(loss.backbone_params.keys(True, True))
    assert any("module" in ".".join(k) for k in keys)
    ref = build()  # no target backbone, same seed: the same weights everywhere but the new memory
    ref.trajectory_encoder = ff
    batch = make_batch()
    outs = []
    for lo in (loss, ref):
        torch.manual_seed(1)
        outs.append(lo(batch.clone()))
    torch.testing.assert_close(outs[0]["td_target_mean"], outs[1]["td_target_mean"])
    outs[0]["loss_actor"].backward()
    assert ff.module[0].weight.grad.abs().sum() > 0
    updater = AMAGOSoftUpdate(loss, tau=0.1, backbone_tau=0.25)  # built after the swap, as the docs say
    target_w = loss.target_backbone_params["trajectory_encoder", "module", "0", "weight"]
    before = target_w.detach().clone()
    with torch.no_grad():
        ff.module[0].weight.add_(1.0)
    updater.step()
    torch.testing.assert_close(target_w, 0.75 * before + 0.25 * ff.module[0].weight.detach())
