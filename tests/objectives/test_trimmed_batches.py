"""A batch trimmed to its longest valid window trains exactly like the same batch padded to max_seq_len:
every encoder, the loss, the PopArt statistics and the gradients agree (the causal model never lets a padded
step reach a valid one, and every statistic is a masked mean)."""
import pytest
import torch

from tests.objectives._build import build, make_batch
from torchrl_amago.objectives import amago_loss


def one_update(loss, batch):
    """(outputs, state_dict, gradients) of one loss call and backward."""
    out = loss(batch)
    (out["loss_actor"] + out["loss_critic"]).backward()
    return (out.detach(), {k: v.clone() for k, v in loss.state_dict().items()},
            {n: p.grad.clone() for n, p in loss.named_parameters() if p.grad is not None})


def assert_same_update(got, want, grad_atol: float):
    """Two `one_update` results agree: every output, every state entry (PopArt, InputNorm) and every gradient."""
    (out_g, state_g, grad_g), (out_w, state_w, grad_w) = got, want
    for key in out_w.keys():
        torch.testing.assert_close(out_g[key], out_w[key], msg=key, rtol=1e-5, atol=1e-6)
    for key in state_w:
        torch.testing.assert_close(state_g[key], state_w[key], msg=key, rtol=1e-5, atol=1e-6)
    assert grad_w.keys() == grad_g.keys() and grad_w
    for key in grad_w:
        torch.testing.assert_close(grad_g[key], grad_w[key], msg=key, rtol=1e-4, atol=grad_atol)


def _min_over_all_members(values, num, use_min, pick=None):  # REDQ without its random draw (shapes differ when trimmed)
    return values.amin(-2) if use_min else values.mean(-2)


def _fixed_noise_normal(self, sample_shape=torch.Size()):  # a Gaussian "sample" that does not depend on shape
    return (self.loc + 0.3 * self.scale).expand(self._extended_shape(sample_shape))


@pytest.mark.parametrize("encoder,kind,critic,enc_kw", [
    ("transformer", "discrete", "auto", {}), ("transformer", "discrete", "auto", {"pos_emb": "rope"}),
    ("transformer", "continuous", "two_hot", {}), ("gru", "continuous", "auto", {}), ("lstm", "discrete", "auto", {}),
    ("ff", "discrete", "auto", {})], ids=["transformer", "transformer-rope", "transformer-twohot", "gru", "lstm", "ff"])
def test_trimmed_equals_padded(monkeypatch, encoder, kind, critic, enc_kw):
    monkeypatch.setattr(amago_loss, "redq_reduce", _min_over_all_members)
    monkeypatch.setattr(torch.distributions.Normal, "rsample", _fixed_noise_normal)
    monkeypatch.setattr(torch.distributions.Normal, "sample", _fixed_noise_normal)
    T_valid = 5
    full = make_batch(kind, T=9, pad_from=(T_valid, 3, None))
    full["mask"][2, T_valid:] = False  # longest valid window: 5 of 9 steps
    trimmed = full[:, :T_valid].clone()
    results = []
    for batch in (full, trimmed):
        loss = build(kind, critic, encoder=encoder, **enc_kw) if not enc_kw else _build_with(kind, critic, enc_kw)
        loss.trajectory_encoder.eval()  # no dropout: the two passes draw different dropout masks
        loss.pack_windows = False  # one window per row in both (packing: test_packed_batches.py)
        results.append(one_update(loss, batch))
    out_f = results[0][0]
    assert_same_update(results[1], results[0], grad_atol=1e-6)
    # sanity: dropping a *valid* step does change the result
    loss = build(kind, critic, encoder=encoder) if not enc_kw else _build_with(kind, critic, enc_kw)
    loss.trajectory_encoder.eval()
    assert not torch.allclose(loss(full[:, :T_valid - 1].clone())["loss_critic"], out_f["loss_critic"])


def _build_with(kind, critic, enc_kw):
    """`build` with encoder options (e.g. rotary positions) passed through make_trajectory_encoder."""
    from tests.objectives import _build as b

    original = b.make_trajectory_encoder
    try:
        b.make_trajectory_encoder = lambda *a, **kw: original(*a, **kw, **enc_kw)
        return build(kind, critic, encoder="transformer")
    finally:
        b.make_trajectory_encoder = original
