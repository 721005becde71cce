"""`AMAGOLoss(target_encoders=True)`: the TD targets of every discount read s_{t+1} from a Polyak-averaged copy of
both encoders. Only that argument builds the copy: no discount switches it on."""
import pytest
import torch
from torchrl.objectives import SoftUpdate

from torchrl_amago.objectives import AMAGOSoftUpdate

from ._build import build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def _loss_pair(encoder, **kw):
    on = build(encoder=encoder, target_encoders=True, **kw)
    off = build(encoder=encoder, **kw)  # same seed: the same weights
    return on, off


def _has_copy(loss) -> bool:
    return "target_backbone_params" in loss._modules or any(k.startswith("target_backbone_params")
                                                            for k in loss.state_dict())


@pytest.mark.parametrize("encoder", ["gru", "ff"])
@pytest.mark.parametrize("pack", ["never", "always"])
def test_at_init_the_target_encoders_are_the_online_ones(encoder, pack):
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
    on = build(encoder="transformer", target_encoders=True)
    sd = on.state_dict()
    assert any(k.startswith("target_backbone_params.") for k in sd)
    other = build(encoder="transformer", seed=3, target_encoders=True)
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


@pytest.mark.parametrize("encoder", ["gru", "ff"])  # no dropout: both losses make the same random draws
def test_target_encoders_give_every_discount_its_targets(encoder):
    """With the copy moved away from the online encoders, the TD targets of EVERY discount (low ones included) are
    those of a plain loss whose encoders hold the copy's weights (and the buffers the online pass left), in eval mode
    (to float precision: an RNN runs its own parameters and the copy's tensors through different kernels), and differ
    from the plain loss's own."""
    gammas = [0.1, 0.5, 0.9]
    on, plain = _loss_pair(encoder, gammas=gammas)
    with torch.no_grad():
        for p in on.target_backbone_params.values(True, True):
            p.add_(0.3 * torch.randn_like(p))
    td = make_batch()
    t_on, t_plain = _td_targets(on, td), _td_targets(plain, td)
    as_copy = build(encoder=encoder, gammas=gammas).eval()
    with torch.no_grad():
        for k, v in on.target_backbone_params.items(True, True):
            as_copy.backbone_params[k].copy_(v)
        for name in ("timestep_encoder", "trajectory_encoder"):  # input statistics, power-iteration vectors
            for (_, mine), (_, theirs) in zip(getattr(as_copy, name).named_buffers(), getattr(on, name).named_buffers()):
                mine.copy_(theirs)
    torch.testing.assert_close(t_on, _td_targets(as_copy, td))
    for g in range(len(gammas)):
        assert not torch.allclose(t_on[..., g], t_plain[..., g]), g


def test_no_discount_switches_the_copy_on():
    """The default loss has no copy whatever its discounts (0.9999 included), and AMAGOSoftUpdate then has nothing for
    backbone_tau to move; target_encoders=True builds it whatever the discounts (0.1 included)."""
    for gammas in ([0.9, 0.999, 0.9995, 0.9999], [0.99999], [0.1, 0.5]):
        loss = build(encoder="gru", gammas=gammas)
        assert loss.target_encoders is False and not _has_copy(loss)
        assert "backbone_params" not in AMAGOSoftUpdate(loss, tau=0.1)._source_names
        on = build(encoder="gru", gammas=gammas, target_encoders=True)
        assert on.target_encoders is True and _has_copy(on)
        assert "backbone_params" in AMAGOSoftUpdate(on, tau=0.1)._source_names


def test_a_swapped_encoder_gets_its_own_copy():
    on = build(encoder="gru", target_encoders=True)
    other = build(encoder="gru", seed=5)
    on.trajectory_encoder = other.trajectory_encoder
    for k, v in on.target_backbone_params["trajectory_encoder"].items(True, True):
        assert torch.equal(v, on.backbone_params["trajectory_encoder"][k])
