"""`AMAGOLoss(target_backbone=True)`: TD targets read s_{t+1} from Polyak-averaged encoders."""
import pytest
import torch
from torchrl.objectives import SoftUpdate

from ._build import build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def _loss_pair(encoder, **kw):
    on = build(encoder=encoder, target_backbone=True, **kw)
    off = build(encoder=encoder, **kw)  # same seed: the same weights
    return on, off


@pytest.mark.parametrize("encoder", ["gru", "ff"])
@pytest.mark.parametrize("pack", ["never", "always"])
def test_at_init_the_target_backbone_is_the_online_one(encoder, pack):
    # target params are a copy of the online ones: every output and gradient equals the plain loss's
    on, off = _loss_pair(encoder, pack_windows=pack)
    assert set(on.target_backbone_params.keys(True, True)) == set(on.backbone_params.keys(True, True))
    td = make_batch()
    outs = []
    for loss in (on, off):
        torch.manual_seed(1)  # REDQ draws
        out = loss(td.clone())
        (out["loss_actor"] + out["loss_critic"]).backward()
        outs.append((out, {n: p.grad.clone() for n, p in loss.named_parameters() if p.grad is not None}))
    (o1, g1), (o2, g2) = outs
    for key in ("loss_actor", "loss_critic", "td_target_mean", "td_target_min", "td_target_max"):
        torch.testing.assert_close(o1[key], o2[key])
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], msg=name)


def test_targets_come_from_the_target_weights_and_soft_update_moves_them():
    on, off = _loss_pair("gru")
    # move the online encoders away from the target copy; `off` runs its encoders on the target copy's weights
    with torch.no_grad():
        for p in list(on.timestep_encoder.parameters()) + list(on.trajectory_encoder.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    off.target_critic_head_params.data.copy_(on.target_critic_head_params.data)
    off.target_actor_head_params.data.copy_(on.target_actor_head_params.data)
    td = make_batch()
    torch.manual_seed(1)
    o_on = on(td.clone())
    torch.manual_seed(1)
    o_off = off(td.clone())  # off's encoders still hold the initial weights = on's target copy
    torch.testing.assert_close(o_on["td_target_mean"], o_off["td_target_mean"])
    torch.testing.assert_close(o_on["td_target_max"], o_off["td_target_max"])
    assert not torch.allclose(o_on["loss_critic"], o_off["loss_critic"])  # Q(s_t) uses the moved online weights
    # SoftUpdate (its construction copies the online weights into the targets, as for the heads), then one step:
    # target <- (1 - tau) target + tau online, for the encoders as for the heads
    upd = SoftUpdate(on, tau=0.1)
    before = {k: v.clone() for k, v in on.target_backbone_params.items(True, True)}
    with torch.no_grad():
        for p in on.trajectory_encoder.parameters():
            p.add_(1.0)
    online = {k: v.detach().clone() for k, v in on.backbone_params.items(True, True)}
    upd.step()
    for k, v in on.target_backbone_params.items(True, True):
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * online[k], msg=str(k))
    assert not torch.equal(v, online[k])


def test_state_dict_round_trip_and_modes_restored():
    on = build(encoder="transformer", target_backbone=True)
    sd = on.state_dict()
    assert any(k.startswith("target_backbone_params.") for k in sd)
    other = build(encoder="transformer", seed=3, target_backbone=True)
    other.load_state_dict(sd)
    for k, v in on.target_backbone_params.items(True, True):
        assert torch.equal(other.target_backbone_params[k], v)
    on.train()
    on(make_batch())
    assert on.timestep_encoder.training and on.trajectory_encoder.training  # the eval-mode target pass restored them
    for p in on.target_backbone_params.values(True, True):
        assert not p.requires_grad
