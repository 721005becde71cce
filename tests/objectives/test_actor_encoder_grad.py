"""`AMAGOLoss(actor_encoder_grad=...)`: which actor-loss terms train the shared encoders."""
import pytest
import torch

from ._build import build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")

CASES = [("discrete", "auto"), ("discrete", "two_hot"), ("continuous", "auto")]


def _run(kind, critic, parts=("loss_actor", "loss_critic"), pack="never", **kw):
    """Outputs and {name: grad} of sum(parts) after one forward/backward on the shared batch (seeded draws)."""
    loss = build(kind, critic, pack_windows=pack, **kw)
    torch.manual_seed(1)  # REDQ picks and sampled actions
    out = loss(make_batch(kind))
    sum(out[p] for p in parts).backward()
    return out, {n: p.grad.clone() for n, p in loss.named_parameters() if p.grad is not None}


def _split(g):
    enc = {n: v for n, v in g.items() if n.startswith(("timestep_encoder", "trajectory_encoder"))}
    return enc, {n: v for n, v in g.items() if n not in enc}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


@pytest.mark.parametrize("kind,critic", CASES)
@pytest.mark.parametrize("mode", ["bc", "none"])
@pytest.mark.parametrize("pack", ["never", "always"])
def test_values_and_head_gradients_equal_the_default(kind, critic, mode, pack):
    """Only where gradients go changes: the losses, the diagnostics and the heads' gradients are the default's."""
    out0, g0 = _run(kind, critic, pack=pack, entropy_coeff=0.01 if kind == "discrete" else 0.0)
    out1, g1 = _run(kind, critic, pack=pack, entropy_coeff=0.01 if kind == "discrete" else 0.0,
                    actor_encoder_grad=mode)
    for key in out0.keys():
        torch.testing.assert_close(out0[key], out1[key], msg=key)
    _assert_same(_split(g0)[1], _split(g1)[1])
    enc0, enc1 = _split(g0)[0], _split(g1)[0]
    assert any(not torch.allclose(enc0[n], enc1[n]) for n in enc0)  # the encoders' gradients do change


@pytest.mark.parametrize("kind,critic", CASES)
def test_none_trains_the_encoders_with_the_critic_loss_alone(kind, critic):
    _, g_none = _run(kind, critic, actor_encoder_grad="none")
    _, g_critic = _run(kind, critic, parts=("loss_critic",))
    _assert_same(_split(g_none)[0], _split(g_critic)[0])


@pytest.mark.parametrize("kind,critic", CASES)
def test_bc_trains_the_encoders_with_the_critic_and_filtered_bc_terms_only(kind, critic):
    """With "bc" the encoders get exactly the gradient of the default loss less that of its DPG and entropy terms
    (`online_coeff=0` would change the TD targets: REDQ takes the min only with a DPG term)."""
    ent = 0.05 if kind == "discrete" else 0.0
    enc_bc = _split(_run(kind, critic, actor_encoder_grad="bc", entropy_coeff=ent)[1])[0]
    enc_all = _split(_run(kind, critic, entropy_coeff=ent)[1])[0]
    enc_dpg = _split(_run(kind, critic, parts=("loss_actor",), entropy_coeff=ent, offline_coeff=0.0)[1])[0]
    _assert_same(enc_bc, {n: enc_all[n] - enc_dpg[n] for n in enc_all})
    # and the actor head still gets the DPG term's gradient
    _, g_dpg = _run(kind, critic, parts=("loss_actor",), actor_encoder_grad="bc", entropy_coeff=ent, offline_coeff=0.0)
    assert any(v.abs().sum() > 0 for n, v in _split(g_dpg)[1].items() if n.startswith("actor_head"))
    assert all(v.abs().sum() == 0 for v in _split(g_dpg)[0].values())


def test_bad_value_names_the_argument():
    with pytest.raises(ValueError, match="actor_encoder_grad='critic'.*'all', 'bc', 'none'"):
        build(actor_encoder_grad="critic")
