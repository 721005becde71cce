import math

import pytest
import torch
from torch.nn import functional as F

from torchrl_amago.modules.common import symlog
from torchrl_amago.modules.ensemble import EnsembleLinear, EnsembleMLP
from torchrl_amago.modules.heads import (ActorHead, ContinuousCritic, DiscreteCritic, PopArt, TwoHotCritic,
                                         gamma_features)
from torchrl_amago.spaces import ActionSpace

D, G, C = 16, 3, 4
GAMMAS = torch.tensor([0.9, 0.99, 0.999])
SPACES = [ActionSpace("discrete", 5), ActionSpace("continuous", 2), ActionSpace("multibinary", 3)]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.kind)
@pytest.mark.parametrize("lead", [(6,), (2, 5)])
def test_actor_head_shapes_and_dtypes(space, lead):
    actor = ActorHead(D, space, G, d_hidden=32)
    params = actor(torch.randn(*lead, D))
    P = space.dim * (2 if space.kind == "continuous" else 1)
    assert params.shape == (*lead, G, P)
    dist = actor.dist(params)
    assert dist.batch_shape == (*lead, G)
    a = dist.sample()
    assert dist.log_prob(a).shape == (*lead, G)
    for det in (True, False):
        act = actor.act(params, deterministic=det)
        if space.kind == "discrete":
            assert act.shape == lead and act.dtype == torch.int64 and ((act >= 0) & (act < space.dim)).all()
        else:
            assert act.shape == (*lead, space.dim) and act.dtype == torch.float32
        if space.kind == "multibinary":
            assert ((act == 0) | (act == 1)).all()
    if space.kind == "discrete":
        assert dist.probs.shape == (*lead, G, space.dim)
        torch.testing.assert_close(actor.act(params, True), dist.probs[..., -1, :].argmax(-1))
    if space.kind == "continuous":
        assert dist.rsample().shape == (*lead, G, space.dim)
        torch.testing.assert_close(actor.act(params, True), torch.tanh(params[..., -1, : space.dim]))


def test_actor_head_is_gamma_major():
    """Output group g of the last Linear is gamma g's params (layout "(g p)")."""
    actor = ActorHead(D, ActionSpace("discrete", 4), G, d_hidden=8)
    last = actor.net.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.arange(G * 4, dtype=torch.float32))
    params = actor(torch.randn(2, D))
    torch.testing.assert_close(params[0], torch.arange(G * 4, dtype=torch.float32).view(G, 4))


def test_actor_head_beta_and_bad_inputs():
    actor = ActorHead(D, ActionSpace("continuous", 2), G, continuous_dist="beta")
    d = actor.dist(actor(torch.randn(3, D)))
    assert d.rsample().shape == (3, G, 2) and d.log_prob(d.sample()).shape == (3, G)
    with pytest.raises(ValueError, match="continuous_dist"):
        ActorHead(D, ActionSpace("continuous", 2), G, continuous_dist="gmm")
    with pytest.raises(ValueError, match="ActionSpace"):
        ActorHead(D, "discrete", G)
    with pytest.raises(ValueError, match="unsupported action kind"):
        ActionSpace("multidiscrete", 3)
    with pytest.raises(ValueError, match="state_emb"):
        actor(torch.randn(3, D + 1))


def test_ensemble_linear_einmix_init_and_independence():
    torch.manual_seed(0)
    layer = EnsembleLinear(4, 200, 300)
    bound_w, bound_b = math.sqrt(3 / 200), math.sqrt(1 / 200)
    assert layer.weight.abs().max() <= bound_w and layer.bias.abs().max() <= bound_b
    assert layer.weight.std().item() == pytest.approx(1 / math.sqrt(200), rel=0.02)
    assert layer.weight.abs().max() > 0.95 * bound_w  # uniform over the full range, not nn.Linear's narrower one
    assert not torch.allclose(layer.weight[0], layer.weight[1])


def test_ensemble_mlp_equals_per_member_linear_stack():
    torch.manual_seed(0)
    net = EnsembleMLP(3, 5, 7, 2, 2)
    x = torch.randn(4, 5)
    out = net(x)
    assert out.shape == (4, 3, 2)
    for c in range(3):
        h = F.leaky_relu(x @ net.inp.weight[c] + net.inp.bias[c], 0.01)
        h = F.leaky_relu(h @ net.core[0].weight[c] + net.core[0].bias[c], 0.01)
        torch.testing.assert_close(out[:, c], h @ net.out.weight[c] + net.out.bias[c])


def test_discrete_critic_shape_and_members():
    critic = DiscreteCritic(D, 5, G, num_critics=C, d_hidden=32, zero_init_output=False)
    q = critic(torch.randn(2, 7, D))
    assert q.shape == (2, 7, C, G, 5) and q.dtype == torch.float32
    assert not torch.allclose(q[:, :, 0], q[:, :, 1])


def test_gamma_features_match_reference_table():
    feats = gamma_features(torch.tensor([0.1, 0.9, 0.99, 0.999])).squeeze(-1)
    torch.testing.assert_close(feats, torch.tensor([0.747, 2.398, 4.615, 6.909]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("cls", [ContinuousCritic, TwoHotCritic])
def test_action_critics_equal_the_concatenated_input(cls):
    """The split first layer equals running cat(state, gamma_feat, clamp(action)) through the ensemble, for
    per-gamma actions, one action for every gamma, extra leading sample dims and a broadcast state."""
    torch.manual_seed(0)
    critic = cls(D, 2, GAMMAS, num_critics=C, d_hidden=32)

    def reference(s, a):
        lead = torch.broadcast_shapes(s.shape[:-1], a.shape[:-2])
        inp = torch.cat([s.unsqueeze(-2).expand(*lead, G, D), gamma_features(GAMMAS).expand(*lead, G, 1),
                         a.clamp(-0.999, 0.999).expand(*lead, G, 2)], -1)
        ref = critic.net(inp).transpose(-3, -2)  # [*, G, C, out] -> [*, C, G, out]
        return ref.squeeze(-1) if cls is ContinuousCritic else ref

    s, a = torch.randn(3, 5, D), torch.randn(3, 5, G, 2) * 2  # some actions beyond +-0.999
    for state, action in ((s, a), (s, a[..., :1, :]), (s, torch.randn(4, 3, 5, G, 2)), (s[:1], a)):
        torch.testing.assert_close(critic(state, action), reference(state, action), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(critic(s, a[..., 0, :]), reference(s, a[..., :1, :]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.kind)
def test_critic_shapes_per_action_space(space):
    s = torch.randn(2, 6, D)
    if space.kind == "discrete":
        assert DiscreteCritic(D, space.dim, G, C)(s).shape == (2, 6, C, G, space.dim)
        a = F.one_hot(torch.randint(0, space.dim, (2, 6, G)), space.dim).float()
    else:
        a = torch.rand(2, 6, G, space.dim) * 2 - 1
        if space.kind == "multibinary":
            a = (a > 0).float()
        critic = ContinuousCritic(D, space.dim, GAMMAS, C, d_hidden=32)
        assert critic(s, a).shape == (2, 6, C, G)
        # [*, A] broadcasts to every gamma; extra leading sample dims broadcast against the state
        torch.testing.assert_close(critic(s, a[..., 0, :]), critic(s, a[..., :1, :].expand(2, 6, G, space.dim)))
        assert critic(s, a.expand(3, 2, 6, G, space.dim)).shape == (3, 2, 6, C, G)
    two_hot = TwoHotCritic(D, space.dim, GAMMAS, C, num_bins=16, d_hidden=32)
    logits = two_hot(s, a)
    assert logits.shape == (2, 6, C, G, 16) and two_hot.to_value(logits).shape == (2, 6, C, G)


def test_critic_bad_action_shapes():
    critic = ContinuousCritic(D, 2, GAMMAS, C)
    with pytest.raises(ValueError, match="action"):
        critic(torch.randn(4, D), torch.randn(4, 3))
    with pytest.raises(ValueError, match="G=3"):
        critic(torch.randn(4, D), torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match="gammas"):
        ContinuousCritic(D, 2, [1.5], C)


def test_two_hot_labels_hand_computed():
    critic = TwoHotCritic(D, 1, GAMMAS, num_bins=5, min_return=-10, max_return=10, use_symlog=False)
    torch.testing.assert_close(critic.bins, torch.tensor([-10.0, -5.0, 0.0, 5.0, 10.0]))
    labels = critic.labels(torch.tensor([2.0, 5.0, -7.5, 100.0, -100.0]))
    expected = torch.tensor([[0, 0, 0.6, 0.4, 0], [0, 0, 0, 1.0, 0], [0.5, 0.5, 0, 0, 0],
                             [0, 0, 0, 0, 1.0], [1.0, 0, 0, 0, 0]])
    torch.testing.assert_close(labels, expected)


def test_two_hot_labels_reproduce_target_in_symlog_space():
    critic = TwoHotCritic(D, 1, GAMMAS)  # 128 bins over symlog([-1e5, 1e5])
    assert critic.bins[0].item() == pytest.approx(-symlog(torch.tensor(1e5)).item())
    target = torch.tensor([[-3000.0, -1.5, 0.0, 0.37], [12.0, 250.0, 9e4, 1e-3]])
    labels = critic.labels(target)
    assert labels.shape == (2, 4, 128)
    torch.testing.assert_close(labels.sum(-1), torch.ones(2, 4))
    assert ((labels > 0).sum(-1) <= 2).all()
    # the expectation is taken in symlog space: sum(p * bins) == symlog(target) exactly for two-hot labels
    torch.testing.assert_close((labels * critic.bins).sum(-1), symlog(target), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(critic.to_value(labels.log()), target, atol=1e-4, rtol=1e-4)
    # out-of-range targets land on the edge bin
    assert critic.labels(torch.tensor([1e7]))[0, -1].item() == 1.0


def test_hl_gauss_labels():
    critic = TwoHotCritic(D, 1, GAMMAS, num_bins=64, min_return=-10, max_return=10, use_symlog=False,
                          label_type="hl_gauss")
    labels = critic.labels(torch.tensor([0.5, -3.0]))
    torch.testing.assert_close(labels.sum(-1), torch.ones(2))
    torch.testing.assert_close((labels * critic.bins).sum(-1), torch.tensor([0.5, -3.0]), atol=1e-3, rtol=0)
    nearest = (critic.bins - torch.tensor([[0.5], [-3.0]])).abs().argmin(-1)
    assert torch.equal(labels.argmax(-1), nearest)


def test_two_hot_init_value():
    critic = TwoHotCritic(D, 1, GAMMAS, num_bins=128, init_value=50.0)
    with torch.no_grad():
        for p in [critic.net.out.weight]:
            p.zero_()
    v = critic.to_value(critic(torch.randn(2, D), torch.zeros(2, G, 1)))
    torch.testing.assert_close(v, torch.full_like(v, 50.0), rtol=0.02, atol=0)


def test_popart_preserves_denormalised_outputs_and_tracks_ema():
    torch.manual_seed(0)
    pa = PopArt(G)
    assert torch.allclose(pa.sigma, torch.full((G,), 10.0))
    x = torch.randn(5, G)
    mu, nu, t = torch.zeros(G, dtype=torch.float64), torch.full((G,), 100.0, dtype=torch.float64), 1
    for step in range(3):
        before = pa(x, normalized=False)
        values = torch.randn(4, 6, G) * 3 + torch.tensor([1.0, 5.0, -20.0])
        mask = torch.rand(4, 6) > 0.3
        pa.update_stats(values, mask)
        torch.testing.assert_close(pa(x, normalized=False), before, atol=1e-5, rtol=1e-6)
        t += 1
        bt = 5e-4 / (1 - (1 - 5e-4) ** t)
        v, m = values.double()[mask], mask.sum()
        mu = (1 - bt) * mu + bt * v.sum(0) / m
        nu = (1 - bt) * nu + bt * (v**2).sum(0) / m
    torch.testing.assert_close(pa.mu.double(), mu, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pa.nu.double(), nu, atol=1e-5, rtol=1e-6)
    sigma = torch.sqrt(nu - mu**2)
    torch.testing.assert_close(pa.sigma.double(), sigma, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pa.w.double(), 10.0 / sigma, atol=1e-5, rtol=1e-5)  # telescopes to sigma_0 / sigma_t
    v = torch.randn(3, G)
    torch.testing.assert_close(pa.normalize_values(v), (v - pa.mu) / pa.sigma)
    torch.testing.assert_close(pa.denormalize(pa.normalize_values(v)), v, atol=1e-5, rtol=1e-5)


def test_popart_min_sigma_caps_w_for_constant_returns_and_keeps_outputs():
    """Constant returns (CartPole's gamma 0.1): sigma collapses to ~1e-2 and w to ~1e3 with the original's floor;
    min_sigma=1 caps w at sigma_0 / 1 = 10 while still preserving the denormalised outputs."""
    x = torch.randn(5, G)
    const = torch.full((64, G), 11.1)
    for floor, w_max in ((1e-4, None), (1.0, 10.0)):
        pa = PopArt(G, beta=0.05, min_sigma=floor)
        for _ in range(400):
            before = pa(x, normalized=False)
            pa.update_stats(const + 0.01 * torch.randn_like(const))
            torch.testing.assert_close(pa(x, normalized=False), before, atol=1e-3, rtol=1e-4)
        if w_max is None:
            assert float(pa.sigma.max()) < 0.05 and float(pa.w.min()) > 200.0
        else:
            torch.testing.assert_close(pa.sigma, torch.ones(G))
            torch.testing.assert_close(pa.w, torch.full((G,), w_max), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="min_sigma"):
        PopArt(G, min_sigma=0.0)


def test_popart_min_sigma_ratio_follows_the_widest_gamma_and_keeps_outputs():
    """Gamma 0 nearly constant (~11.1), gamma 2 with returns of std ~20: with min_sigma_ratio 0.1 gamma 0's sigma
    settles at 0.1 x gamma 2's (w = sigma_0 / sigma bounded by it), the others are untouched, outputs preserved;
    ratio 0 is the original's maths (gamma 0's sigma collapses to ~1e-2)."""
    torch.manual_seed(0)
    x = torch.randn(5, G)
    scale = torch.tensor([0.01, 2.0, 20.0])
    for ratio in (0.0, 0.1):
        torch.manual_seed(1)
        pa = PopArt(G, beta=0.05, min_sigma_ratio=ratio)
        for _ in range(400):
            before = pa(x, normalized=False)
            pa.update_stats(torch.tensor([11.1, 0.0, 0.0]) + scale * torch.randn(64, G))
            torch.testing.assert_close(pa(x, normalized=False), before, atol=1e-3, rtol=1e-4)
        raw = torch.sqrt((pa.nu - pa.mu.square()).clamp(1e-4))
        if ratio == 0:
            assert float(pa.sigma[0]) < 0.05 and float(pa.w[0]) > 200.0
        else:
            torch.testing.assert_close(pa.sigma[0], 0.1 * pa.sigma[2])
            assert 1.5 < float(pa.sigma[0]) < 2.5 and float(pa.w[0]) < 10.0 / 1.5
        torch.testing.assert_close(pa.sigma[1:], raw[1:])
    with pytest.raises(ValueError, match="min_sigma_ratio"):
        PopArt(G, min_sigma_ratio=1.5)


def test_popart_mask_forms_and_errors():
    a, b = PopArt(G), PopArt(G)
    values = torch.randn(2, 5, C, G)
    mask = torch.rand(2, 5) > 0.5
    a.update_stats(values, mask)  # leading-aligned [B, T]
    b.update_stats(values, mask[:, :, None, None])  # broadcastable
    torch.testing.assert_close(a.mu, b.mu)
    with pytest.raises(ValueError, match="mask"):
        a.update_stats(values, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="gamma"):
        a(torch.randn(4, G + 1))


def test_parameter_counts_match_the_original_defaults():
    """Analytic counts of the original's default heads (C=4, 256 hidden, 2 layers, G=7)."""
    def n(m):
        return sum(p.numel() for p in m.parameters())

    g7 = torch.tensor([0.1, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999])
    A = 6
    assert n(ActorHead(256, ActionSpace("continuous", A), 7)) == 131_584 + 257 * 7 * 2 * A
    assert n(ContinuousCritic(256, A, g7)) == 528_388 + 1024 * A
    assert n(DiscreteCritic(256, A, 7)) == 526_336 + 7_196 * A
    assert n(TwoHotCritic(256, A, g7)) == 665_088


def test_discrete_critic_starts_at_zero_and_learns_off_it():
    """Default init: Q = 0 for every state, member, gamma and action (no random value bias); one optimizer step on
    a regression target moves every member off zero, each differently (their hidden features differ)."""
    torch.manual_seed(0)
    critic = DiscreteCritic(D, 3, G, num_critics=C, d_hidden=32)
    x = torch.randn(16, D)
    assert torch.equal(critic(x), torch.zeros(16, C, G, 3))
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    (critic(x) - 1.0).square().mean().backward()
    assert critic.net.out.weight.grad.abs().sum() > 0
    opt.step()
    q = critic(x)
    assert (q > 0).all()
    assert not torch.allclose(q[:, 0], q[:, 1])


def test_zero_init_is_a_choice_per_critic_kind():
    """Discrete default zero; continuous and two-hot keep the original's random last layer unless asked."""
    torch.manual_seed(0)
    s, a = torch.randn(4, D), torch.zeros(4, G, 1)
    assert ContinuousCritic(D, 1, GAMMAS)(s, a).abs().sum() > 0
    assert torch.equal(ContinuousCritic(D, 1, GAMMAS, zero_init_output=True)(s, a), torch.zeros(4, C, G))
    assert DiscreteCritic(D, 3, G, zero_init_output=False)(s).abs().sum() > 0
    two_hot = TwoHotCritic(D, 1, GAMMAS, num_bins=16, zero_init_output=True)
    logits = two_hot(s, a)
    assert torch.equal(logits, torch.zeros_like(logits))
