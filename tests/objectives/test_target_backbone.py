"""`AMAGOLoss(target_backbone=True)`: TD targets read s_{t+1} from Polyak-averaged encoders, built when a discount
reaches `target_backbone_min_gamma` (default 0.9999; 0.0: always) and read by every discount, or with
`target_backbone_all_gammas=False` by those that reach it."""
import pytest
import torch
from torchrl.objectives import SoftUpdate

from ._build import build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def _loss_pair(encoder, **kw):
    on = build(encoder=encoder, target_backbone=True, target_backbone_min_gamma=0.0, **kw)
    off = build(encoder=encoder, target_backbone=False, **kw)  # same seed: the same weights
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
    on = build(encoder="transformer", target_backbone_min_gamma=0.0)
    sd = on.state_dict()
    assert any(k.startswith("target_backbone_params.") for k in sd)
    other = build(encoder="transformer", seed=3, target_backbone_min_gamma=0.0)
    other.load_state_dict(sd)
    for k, v in on.target_backbone_params.items(True, True):
        assert torch.equal(other.target_backbone_params[k], v)
    on.train()
    on(make_batch())
    assert on.timestep_encoder.training and on.trajectory_encoder.training  # the eval-mode target pass restored them
    for p in on.target_backbone_params.values(True, True):
        assert not p.requires_grad


def _td_targets(loss, td):
    """The raw TD targets [B, T, G] one forward computes (what PopArt's statistics are updated with)."""
    seen = []
    update = loss.popart.update_stats
    loss.popart.update_stats = lambda target, mask: (seen.append(target.clone()), update(target, mask))[1]
    torch.manual_seed(1)  # REDQ draws
    loss(td.clone())
    loss.popart.update_stats = update
    return seen[0]


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_min_gamma_takes_the_copy_for_the_high_discounts_only(encoder):
    """With target_backbone_all_gammas=False, the discounts at or above target_backbone_min_gamma get the all-copy
    loss's targets and the others the plain loss's, bit for bit, from the same weights (the copy moved away from the
    online encoders so the two differ): the mixed loss draws REDQ's members once, as each of the others does. With
    the default (every discount), a threshold that one discount reaches gives the all-copy loss's targets."""
    gammas = [0.5, 0.9, 0.99]
    copy = build(encoder=encoder, target_backbone_min_gamma=0.0, gammas=gammas)
    mixed = build(encoder=encoder, target_backbone_min_gamma=0.95, target_backbone_all_gammas=False, gammas=gammas)
    every = build(encoder=encoder, target_backbone_min_gamma=0.95, gammas=gammas)
    plain = build(encoder=encoder, target_backbone=False, gammas=gammas)
    with torch.no_grad():
        for p in copy.target_backbone_params.values(True, True):
            p.add_(0.3 * torch.randn_like(p))
    for loss in (mixed, every):
        loss.target_backbone_params.data.copy_(copy.target_backbone_params.data)
    td = make_batch()
    t_copy, t_mixed, t_every, t_plain = (_td_targets(loss, td) for loss in (copy, mixed, every, plain))
    assert not torch.allclose(t_copy, t_plain)
    assert torch.equal(t_mixed[..., 2], t_copy[..., 2])
    assert torch.equal(t_mixed[..., :2], t_plain[..., :2])
    assert torch.equal(t_every, t_copy)


@pytest.mark.parametrize("kw", [dict(), dict(target_backbone_min_gamma=0.9995)])
def test_no_discount_at_min_gamma_builds_no_copy(kw):
    """No discount at min_gamma (the default 0.9999 with discounts up to 0.999): no copy, and the loss is the plain
    one, outputs and gradients bit for bit."""
    on = build(encoder="gru", **kw)
    off = build(encoder="gru", target_backbone=False)
    assert not on.target_backbone and not any(k.startswith("target_backbone_params") for k in on.state_dict())
    outs = []
    for loss in (on, off):
        torch.manual_seed(1)
        out = loss(make_batch())
        (out["loss_actor"] + out["loss_critic"]).backward()
        outs.append((out, [p.grad.clone() for p in loss.parameters() if p.grad is not None]))
    for key in ("loss_actor", "loss_critic", "td_target_mean"):
        assert torch.equal(outs[0][0][key], outs[1][0][key])
    for g_on, g_off in zip(outs[0][1], outs[1][1]):
        assert torch.equal(g_on, g_off)


def test_default_copy_is_built_by_0_9999_for_every_discount():
    """The default threshold 0.9999 is reached by the discount 0.9999 (both compared in the discounts' float32), not by
    0.9995 or 0.999; once built, every discount reads the copy, or with target_backbone_all_gammas=False only 0.9999;
    target_backbone=False builds no copy whatever the discounts."""
    gammas = [0.9, 0.999, 0.9995, 0.9999]
    loss = build(encoder="gru", gammas=gammas)
    assert loss.target_backbone and not loss._mixed_targets and loss._copy_gammas.tolist() == [True] * 4
    only = build(encoder="gru", gammas=gammas, target_backbone_all_gammas=False)
    assert only._mixed_targets and only._copy_gammas.tolist() == [False, False, False, True]
    assert not build(encoder="gru", gammas=gammas[:3]).target_backbone
    off = build(encoder="gru", target_backbone=False, gammas=[0.9, 0.9999])
    assert not off.target_backbone and not off._copy_gammas.any()


def test_min_gamma_out_of_range_is_named():
    with pytest.raises(ValueError, match="target_backbone_min_gamma"):
        build(encoder="gru", target_backbone_min_gamma=1.0)
