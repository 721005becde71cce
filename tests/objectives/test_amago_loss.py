"""AMAGOLoss: outputs, gradient routing, target updates, masking, PopArt invariance, T+1 sequence, keys."""
from __future__ import annotations


import pytest
import torch
from torchrl.objectives import SoftUpdate

from torchrl_amago.objectives import DEFAULT_TAU, AMAGOLoss, nstep_return, redq_reduce
from torchrl_amago.modules.heads import TwoHotCritic
from torchrl_amago.objectives.amago_loss import States

from ._build import GAMMAS, A, build, grads, make_batch, nonzero

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")

CONFIGS = [
    ("discrete", "auto", {}),
    ("discrete", "two_hot", {}),
    ("continuous", "auto", {}),
    ("continuous", "two_hot", {}),
    ("continuous", "auto", {"continuous_dist": "beta"}),
    ("multibinary", "auto", {"online_coeff": 0.0}),
]
IDS = ["discrete", "discrete-twohot", "tanh", "tanh-twohot", "beta", "multibinary"]


def _backbone(loss):
    return list(loss.timestep_encoder.named_parameters()) + list(loss.trajectory_encoder.named_parameters())


@pytest.mark.parametrize("kind,critic,kw", CONFIGS, ids=IDS)
def test_outputs(kind, critic, kw):
    loss = build(kind, critic, **kw)
    out = loss(make_batch(kind))
    for key in ("loss_actor", "loss_critic"):
        assert out[key].shape == () and torch.isfinite(out[key]) and out[key].requires_grad
    assert out["q_mean"].shape == (len(GAMMAS),)
    assert out["loss_critic"].item() == pytest.approx(10.0 * out["critic_loss_unweighted"].item(), rel=1e-5)
    assert 0.0 <= out["filter_acceptance"].item() <= 1.0
    assert out["valid_steps"].item() == 8 + 5 + 2
    assert out["td_target_min"] <= out["td_target_mean"] <= out["td_target_max"]
    for key, v in out.items():
        if not key.startswith("loss_") or key in ("loss_actor_online", "loss_actor_offline"):
            assert not v.requires_grad, key


def _graph_leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors whose gradients a backward of `t` would compute."""
    seen, stack, leaves = set(), [t.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.append(fn.variable)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


@pytest.mark.parametrize("kind,critic", [("continuous", "auto"), ("discrete", "two_hot")])
def test_dpg_term_computes_no_critic_weight_gradients(kind, critic):
    """The DPG term reads the critic through detached parameters: backward must not even compute gradients for
    them (a `to_module` call would rewrap them as fresh trainable Parameters: the same values, but a weight-grad
    pass per update through the widest matmuls, [B*T*G] rows per member, thrown away)."""
    loss = build(kind, critic, offline_coeff=0.0)
    leaves = _graph_leaves(loss(make_batch(kind))["loss_actor"])
    own = {id(p) for p in loss.parameters()}
    assert leaves and all(id(leaf) in own for leaf in leaves)
    assert not {id(p) for p in loss.critic_head.parameters()} & {id(leaf) for leaf in leaves}


@pytest.mark.parametrize("kind,critic,kw", CONFIGS[:4], ids=IDS[:4])
def test_gradient_routing(kind, critic, kw):
    td = make_batch(kind)
    # critic loss: nothing on the actor head, something on critic and backbone
    loss = build(kind, critic, **kw)
    loss(td)["loss_critic"].backward()
    assert not nonzero(grads(loss.actor_head.named_parameters()))
    assert nonzero(grads(loss.critic_head.named_parameters()))
    assert nonzero(grads(_backbone(loss)))
    # online (DPG) actor term alone: nothing on the critic, something on the actor head and the backbone
    loss = build(kind, critic, offline_coeff=0.0, **kw)
    loss(td)["loss_actor"].backward()
    assert not nonzero(grads(loss.critic_head.named_parameters()))
    assert nonzero(grads(loss.actor_head.named_parameters()))
    assert nonzero(grads(_backbone(loss)))
    # offline (filtered BC) term alone: same routing
    loss = build(kind, critic, online_coeff=0.0, **kw)
    loss(td)["loss_actor"].backward()
    assert not nonzero(grads(loss.critic_head.named_parameters()))
    assert nonzero(grads(_backbone(loss)))


def test_target_params_change_only_through_soft_update():
    loss = build("discrete")
    updater = SoftUpdate(loss, tau=DEFAULT_TAU)
    opt = torch.optim.AdamW(loss.parameters(), lr=1e-2)
    targets = [loss.target_actor_head_params, loss.target_critic_head_params]
    sources = [loss.actor_head_params, loss.critic_head_params]
    assert all(not p.requires_grad for t in targets for p in t.values(True, True))
    before = [t.clone() for t in targets]
    out = loss(make_batch("discrete"))
    (out["loss_actor"] + out["loss_critic"]).backward()
    opt.step()
    for t, b, s in zip(targets, before, sources):
        assert (t == b).all()  # optimizer step leaves targets alone
        assert not (s == b).all()  # ... while the online heads moved
    updater.step()
    for t, b, s in zip(targets, before, sources):
        for key, val in t.items(True, True):
            expected = (1 - DEFAULT_TAU) * b[key] + DEFAULT_TAU * s[key].detach()
            torch.testing.assert_close(val, expected)


def _change_padding(td, value):
    """Overwrite every field at padded steps (rows 1, 2 from steps 5, 2) with `value` (NaN allowed)."""
    td = td.clone()
    pad = ~td["mask"]
    for key in td.keys(True, True):
        if key == "mask":
            continue
        x = td[key]
        m = pad.reshape(*pad.shape, *([1] * (x.ndim - 2))).expand_as(x)
        if x.dtype == torch.bool:
            x = torch.where(m, ~x, x)
        elif x.is_floating_point():
            x = torch.where(m, torch.full_like(x, value), x)
        else:
            x = torch.where(m, torch.full_like(x, 7), x)
        td[key] = x
    return td


def _state(loss):
    return {k: v.clone() for k, v in loss.state_dict().items()}


@pytest.mark.parametrize("encoder,kind,critic,one_hot", [
    ("transformer", "discrete", "auto", False), ("transformer", "discrete", "auto", True),
    ("gru", "continuous", "auto", False), ("transformer", "continuous", "two_hot", False)],
    ids=["transformer-discrete", "transformer-onehot", "gru-tanh", "transformer-twohot"])
def test_padded_steps_change_nothing(encoder, kind, critic, one_hot):
    kw = {}
    td = make_batch(kind, one_hot=one_hot)
    results = []
    for batch in (td, _change_padding(td, float("nan")), _change_padding(td, 1e4)):
        loss = build(kind, critic, encoder=encoder, one_hot=one_hot, **kw)
        torch.manual_seed(123)
        out = loss(batch)
        (out["loss_actor"] + out["loss_critic"]).backward()
        g = {n: p.grad.clone() for n, p in loss.named_parameters() if p.grad is not None}
        results.append((out.detach(), _state(loss), g))
    ref_out, ref_state, ref_g = results[0]
    assert any("input_norm" in k or "in_norm" in k for k in ref_state) and "popart.mu" in ref_state
    for out, state, g in results[1:]:
        for key in ref_out.keys():
            torch.testing.assert_close(out[key], ref_out[key], msg=key)
        for key in ref_state:
            torch.testing.assert_close(state[key], ref_state[key], msg=key)
        assert g.keys() == ref_g.keys()
        for key in g:
            torch.testing.assert_close(g[key], ref_g[key], msg=key)
    # sanity: the same edit on a *valid* step does change the result
    td2 = td.clone()
    td2["next", "observation"][0, 1] += 1.0
    loss = build(kind, critic, encoder=encoder, one_hot=one_hot, **kw)
    torch.manual_seed(123)
    assert not torch.allclose(loss(td2)["loss_critic"], ref_out["loss_critic"])


def test_popart_update_preserves_denormalized_outputs():
    loss = build("discrete")
    states = torch.randn(20, 16)
    with torch.no_grad():
        x = loss.critic_head(states).movedim(-2, -1)  # [20, C, A, G]: PopArt wants gammas last
        before = loss.popart(x, normalized=False)
        mu0, w0 = loss.popart.mu.clone(), loss.popart.w.clone()
    td = make_batch("discrete")
    td["next", "reward"] = td["next", "prev_reward"] = td["next", "reward"] * 20 + 5  # move the stats a lot
    loss(td)
    with torch.no_grad():
        after = loss.popart(x, normalized=False)
    assert (loss.popart.mu - mu0).abs().min() > 1.0 and (loss.popart.w - w0).abs().min() > 1e-3
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-6)


def test_td_targets_are_the_nstep_returns():
    """Zero critic outputs -> the bootstrap is 0, so the target is exactly the masked n-step reward sum."""
    for n in (1, 3):
        loss = build("discrete", n_step=n, n_step_cut=0.0, reward_multiplier=10.0)
        with torch.no_grad():
            for p in loss.target_critic_head_params["net", "out"].values():
                p.zero_()
        td = make_batch("discrete")
        out = loss(td)
        m = td["mask"]
        exp = nstep_return(td["next", "reward"], td["next", "terminated"], m, torch.zeros(3, 8, len(GAMMAS)),
                           torch.tensor(GAMMAS), n, 10.0)
        assert out["td_target_max"].item() == pytest.approx(exp[m].max().item(), rel=1e-5)
        assert out["td_target_min"].item() == pytest.approx(exp[m].min().item(), rel=1e-5)
        assert out["td_target_mean"].item() == pytest.approx((exp[..., -1] * m).sum().item() / (m.sum().item() + 1e-5),
                                                             rel=1e-5)


def test_statistics_use_exactly_the_valid_steps():
    """First update from fresh stats: mu = beta_1 * (mean over valid entries), for PopArt (TD targets, steps with
    mask True) and InputNorm (sequence positions: 0 valid iff step 0 is, t+1 valid iff step t is)."""
    loss = build("discrete", n_step=2, n_step_cut=0.0)
    with torch.no_grad():
        for p in loss.target_critic_head_params["net", "out"].values():
            p.zero_()
    td = make_batch("discrete")
    loss(td)
    m = td["mask"]
    y = nstep_return(td["next", "reward"], td["next", "terminated"], m, torch.zeros(3, 8, len(GAMMAS)),
                     torch.tensor(GAMMAS), 2, 10.0)
    beta = loss.popart.beta
    b1 = beta / (1 - (1 - beta) ** 2)
    torch.testing.assert_close(loss.popart.mu, b1 * y[m].mean(0), rtol=1e-5, atol=1e-6)
    norm = loss.timestep_encoder.in_norm
    feats = lambda r: torch.cat([td[r + ("observation",)], td[r + ("prev_reward",)], td[r + ("prev_action",)]], -1)
    x = torch.cat([feats(())[:, :1], feats(("next",))], 1)  # [B, T+1, F]
    seq_mask = torch.cat([m[:, :1], m], 1)
    b1 = norm.beta / (1 - (1 - norm.beta) ** 2)
    torch.testing.assert_close(norm.mu, b1 * x[seq_mask].mean(0), rtol=1e-5, atol=1e-6)


def test_sequence_is_root0_then_next():
    """The model sees [root[:, 0], next[:, 0..T-1]]: root observations after t=0 are never read."""
    td = make_batch("discrete")
    ref = build("discrete")
    torch.manual_seed(0)
    ref_out = ref(td).detach()
    td_root = td.clone()
    td_root["observation"][:, 1:] += 3.0
    td_root["prev_reward"][:, 1:] -= 2.0
    loss = build("discrete")
    torch.manual_seed(0)
    out = loss(td_root).detach()
    for key in ref_out.keys():
        torch.testing.assert_close(out[key], ref_out[key], msg=key)
    td_first = td.clone()
    td_first["observation"][:, 0] += 3.0
    loss = build("discrete")
    torch.manual_seed(0)
    assert not torch.allclose(loss(td_first)["loss_critic"], ref_out["loss_critic"])


def test_one_hot_and_index_actions_agree():
    outs = []
    for one_hot in (False, True):
        loss = build("discrete", one_hot=one_hot)
        torch.manual_seed(0)
        outs.append(loss(make_batch("discrete", one_hot=one_hot)).detach())
    for key in outs[0].keys():
        torch.testing.assert_close(outs[0][key], outs[1][key], msg=key)


def test_set_keys():
    td = make_batch("discrete")
    loss = build("discrete")
    torch.manual_seed(0)
    ref = loss(td).detach()
    renamed = td.clone()
    renamed["next", "rew"] = renamed.pop(("next", "reward"))
    renamed["valid"] = renamed.pop("mask")
    renamed["pa"] = renamed.pop("prev_action")
    renamed["next", "pa"] = renamed.pop(("next", "prev_action"))
    loss = build("discrete")
    loss.set_keys(reward=("next", "rew"), mask="valid", prev_action="pa")
    torch.manual_seed(0)
    out = loss(renamed)
    for key in ref.keys():
        torch.testing.assert_close(out[key], ref[key], msg=key)
    with pytest.raises(ValueError, match="rew"):  # the renamed key is what gets reported when missing
        loss(renamed.exclude(("next", "rew")))


def test_missing_mask_is_an_error():
    """A batch without "mask" used to count every step as valid (padding trained on); it now names the key."""
    td = make_batch("discrete", pad_from=(None, None, None))
    loss = build("discrete")
    with pytest.raises(ValueError, match="no key 'mask'"):
        loss(td.exclude("mask"))


def test_bad_inputs():
    td = make_batch("discrete")
    loss = build("discrete")
    with pytest.raises(ValueError, match="observation"):
        loss(td.exclude(("next", "observation")))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        loss(td[0])
    with pytest.raises(ValueError, match="online_coeff"):
        build("multibinary")  # Bernoulli actions have no rsample: DPG impossible
    with pytest.raises(ValueError, match="gammas"):  # heads built for 7 gammas
        AMAGOLoss(loss.timestep_encoder, loss.trajectory_encoder.encoder, loss.actor_head, loss.critic_head,
                  action_space=loss.action_space, gammas=[0.9, 0.99])
    with pytest.raises(ValueError, match="fbc_filter"):
        build("discrete", fbc_filter="nope")
    with pytest.raises(ValueError, match="n_step"):
        build("discrete", n_step=0)


def test_an_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_stepp'"):
        build("discrete", n_stepp=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'target_backbone'"):  # retired in 0.2.0
        build("discrete", target_backbone=True)


def test_popart_takes_a_popart_layer_sized_for_the_gammas():
    from torchrl_amago.modules.heads import PopArt

    layer = PopArt(len(GAMMAS), beta=0.01, min_sigma=0.5)
    loss = build("discrete", popart=layer)
    assert loss.popart is layer and loss.use_popart
    loss(make_batch("discrete"))
    assert int(layer._t[0]) > 1  # its statistics follow the targets
    default = build("discrete").popart  # popart=True: PopArt's defaults, no sigma below a tenth of the widest
    assert (default.beta, default.min_sigma, default.min_sigma_ratio, float(default.nu[0])) == (5e-4, 1e-4, 0.1, 100.0)
    with pytest.raises(ValueError, match="popart was built for 2 gammas but the loss uses 7"):
        build("discrete", popart=PopArt(2))


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_multi_task_factory(kind):
    ref = build(kind)
    loss = AMAGOLoss.multi_task(ref.timestep_encoder, ref.trajectory_encoder.encoder, ref.actor_head,
                                action_space=ref.action_space, gammas=GAMMAS, num_critics=2,
                                critic_kwargs=dict(d_hidden=16, num_bins=31))
    assert loss.two_hot and isinstance(loss.critic_head, TwoHotCritic)
    assert (loss.online_coeff, loss.offline_coeff, loss.k_actor) == (0.0, 1.0, 3)
    out = loss(make_batch(kind))
    assert "loss_actor_online" not in out.keys() and out["loss_critic"] > 0
    with pytest.raises(ValueError, match="TwoHotCritic"):
        AMAGOLoss.multi_task(ref.timestep_encoder, ref.trajectory_encoder.encoder, ref.actor_head, ref.critic_head,
                             action_space=ref.action_space, gammas=GAMMAS)


def test_no_target_actor_and_no_popart():
    for kw in ({"use_target_actor": False}, {"popart": False}, {"fbc_filter": "exp"}, {"fbc_filter": "leaky_relu"}):
        loss = build("continuous", **kw)
        out = loss(make_batch("continuous"))
        (out["loss_actor"] + out["loss_critic"]).backward()
        assert torch.isfinite(out["loss_actor"]) and nonzero(grads(loss.actor_head.named_parameters()))
    loss = build("continuous", popart=False)
    loss(make_batch("continuous"))
    assert (loss.popart.mu == 0).all()  # stats untouched when PopArt is off


def test_redq_reduce():
    v = torch.arange(4.0).view(1, 4, 1).expand(20000, 4, 2)  # member c has value c
    lo = redq_reduce(v, 2, use_min=True)
    mean = redq_reduce(v, 2, use_min=False)
    assert lo.shape == (20000, 2)
    # P(min of 2 draws with replacement == 0) = 1 - (3/4)^2 = 0.4375
    assert (lo == 0).float().mean().item() == pytest.approx(0.4375, abs=0.02)
    assert mean.mean().item() == pytest.approx(1.5, abs=0.03)
    assert not torch.equal(lo[:, 0], lo[:, 1])  # independent per gamma
    torch.testing.assert_close(redq_reduce(torch.ones(5, 1, 3), 2, True), torch.ones(5, 3))
    # given members [..., num, G]: gamma 0 takes members 1 and 3, gamma 1 member 2 twice
    pick = torch.tensor([[[1, 2], [3, 2]]])
    vals = torch.tensor([[[10.0, 20.0], [11.0, 21.0], [12.0, 22.0], [13.0, 23.0]]])  # [1, C=4, G=2]
    assert redq_reduce(vals, 2, use_min=True, pick=pick).tolist() == [[11.0, 22.0]]
    assert redq_reduce(vals, 2, use_min=False, pick=pick).tolist() == [[12.0, 22.0]]


def test_nested_observation_keys():
    from torchrl_amago.modules.heads import ActorHead, DiscreteCritic
    from torchrl_amago.modules.timestep import MLPTimestepEncoder
    from torchrl_amago.modules.trajectory import make_trajectory_encoder

    td = make_batch("discrete")
    for root in ((), ("next",)):
        td[root + ("agent", "pos")] = td.pop(root + ("observation",))
    asp = build("discrete").action_space
    te = MLPTimestepEncoder({("agent", "pos"): (5,)}, 3, d_hidden=16, d_output=16)
    tr = make_trajectory_encoder("gru", 16, 64, d_model=16, n_layers=1)
    loss = AMAGOLoss(te, tr, ActorHead(16, asp, 7, d_hidden=16), DiscreteCritic(16, 3, 7, 2, d_hidden=16),
                     action_space=asp)
    out = loss(td)
    assert torch.isfinite(out["loss_critic"])
    with pytest.raises(ValueError, match="agent"):
        loss(td.exclude(("next", "agent", "pos")))


def _outputs_without_and_with(option: str, batch, value: float = 0.5):
    """The discrete loss's outputs on `batch` with `option` at 0 and at `value` (same weights and draws), the loss at
    `value` and its states s_t."""
    outs = {}
    for c in (0.0, value):
        loss = build("discrete", **{option: c}).eval()
        torch.manual_seed(0)
        outs[c] = loss(batch.clone())
    with torch.no_grad():
        s = loss._backbone(batch.clone(), batch["mask"])[:, :-1]
    return outs, loss, s


def test_entropy_bonus_lowers_the_actor_loss_by_its_weighted_masked_entropy():
    """`entropy_coeff` (not in the original; default 0): loss_actor - c * mean entropy over valid steps and gammas,
    and the critic loss is untouched."""
    from torchrl_amago.objectives import masked_mean

    batch = make_batch("discrete")
    outs, loss, s = _outputs_without_and_with("entropy_coeff", batch)
    with torch.no_grad():
        mask = batch["mask"]
        entropy = loss.actor_head.dist(loss._actor(loss.actor_head_params, s)).entropy()  # [B, T, G]
        want = float(outs[0.0]["loss_actor"]) - 0.5 * float(masked_mean(entropy, mask))
    assert float(outs[0.5]["loss_actor"]) == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert float(outs[0.5]["loss_critic"]) == pytest.approx(float(outs[0.0]["loss_critic"]), rel=1e-6)
    for kind, c in (("continuous", 0.1), ("discrete", -0.1)):
        with pytest.raises(ValueError, match="entropy_coeff"):
            build(kind, entropy_coeff=c)


def test_cql_term_adds_the_weighted_gap_between_logsumexp_q_and_the_buffer_action_q():
    """`cql_coeff` (not in the original; default 0): the critic loss gains c * masked mean over valid steps, critics
    and gammas of logsumexp_a Q(s, a) - Q(s, a_buffer), both PopArt-normalised (w q + b per gamma); the actor loss is
    untouched; `cql_gap` logs the mean gap. Its gradient lowers the other actions' Q relative to the buffer's."""
    from torchrl_amago.objectives import masked_mean

    batch = make_batch("discrete", pad_from=(None, 5, 2))
    outs, loss, s = _outputs_without_and_with("cql_coeff", batch)
    mask = batch["mask"]
    with torch.no_grad():
        q = loss._critic(loss.critic_head_params, s).float()  # [B, T, C, G, A]
        w, b = loss.popart.w.view(1, 1, 1, -1, 1), loss.popart.b.view(1, 1, 1, -1, 1)
        norm = w * q + b
        lo, hi = loss.discrete_clip
        soft = torch.nn.functional.one_hot(batch["action"], A).float().clamp(lo, hi)
        soft = soft / soft.sum(-1, keepdim=True)
        gap = torch.logsumexp(norm, -1) - (norm * soft[:, :, None, None]).sum(-1)  # [B, T, C, G]
        assert bool((gap > 0).all())
        want = float(outs[0.0]["loss_critic"]) + loss.critic_loss_weight * 0.5 * float(masked_mean(gap, mask))
    assert float(outs[0.5]["loss_critic"]) == pytest.approx(want, rel=1e-5)
    assert float(outs[0.5]["cql_gap"]) == pytest.approx(float(masked_mean(gap, mask)), rel=1e-5)
    assert float(outs[0.5]["loss_actor"]) == pytest.approx(float(outs[0.0]["loss_actor"]), rel=1e-6)
    assert "cql_gap" not in outs[0.0].keys()
    # one gradient step on the term alone: the buffer action's Q rises against the others at a valid step
    loss.zero_grad()
    batch_in = loss.read_batch(batch.clone())
    states = States(s, s.detach(), s)
    critic = loss.critic_loss(batch_in, states, torch.zeros(*mask.shape, len(GAMMAS)))[1]
    masked_mean(critic.cql_gap, mask).backward()
    with torch.no_grad():
        for p in loss.critic_head_params.values(True, True):
            p -= 0.5 * p.grad
        q_new = loss._critic(loss.critic_head_params, s).float()
    a = batch["action"][0, 0]
    others = [i for i in range(A) if i != int(a)]
    before = q[0, 0, :, :, a] - q[0, 0, :, :, others].max(-1).values
    after = q_new[0, 0, :, :, a] - q_new[0, 0, :, :, others].max(-1).values
    assert float((after - before).mean()) > 0
    for kind, critic_kind, c in (("continuous", "auto", 0.1), ("discrete", "two_hot", 0.1), ("discrete", "auto", -1.0)):
        with pytest.raises(ValueError, match="cql_coeff"):
            build(kind, critic=critic_kind, cql_coeff=c)


def test_n_step_cut_stops_returns_at_actions_the_target_policy_rates_low():
    """Zero target critic -> no bootstrap value, so each target is a masked reward sum whose length shows the cuts.
    A target actor that outputs only its bias: the same pi at every step; with n_step_cut=1 a return goes on through
    step t only where a_t is that pi's mode (per gamma). A uniform pi never cuts."""
    td = make_batch("discrete")
    m, a = td["mask"], td["action"]
    for bias_scale, expect_cuts in ((0.0, False), (3.0, True)):
        loss = build("discrete", n_step=3, n_step_cut=1.0, reward_multiplier=10.0)
        with torch.no_grad():
            for p in loss.target_critic_head_params["net", "out"].values():
                p.zero_()
            last = loss.target_actor_head_params["net", "net", "8"]
            last["weight"].zero_()
            last["bias"].copy_(bias_scale * torch.randn(last["bias"].shape, generator=torch.Generator().manual_seed(1)))
            params = last["bias"].clone().float().unflatten(-1, (len(GAMMAS), -1))  # the head's [G, A] layout
            probs = loss.actor_head.dist(params.expand(3, 8, -1, -1)).probs  # [B, T, G, A]
        mode_taken = probs.gather(-1, a[..., None, None].expand(3, 8, len(GAMMAS), 1)).squeeze(-1) >= probs.amax(-1)
        cont = torch.cat([torch.ones_like(mode_taken[:, :1]), mode_taken[:, 1:]], 1)
        assert bool((~cont).any()) is expect_cuts
        exp = nstep_return(td["next", "reward"], td["next", "terminated"], m, torch.zeros(3, 8, len(GAMMAS)),
                           torch.tensor(GAMMAS), 3, 10.0, continues=cont)
        out = loss(td)
        assert out["td_target_mean"].item() == pytest.approx((exp[..., -1] * m).sum().item() / (m.sum().item() + 1e-5),
                                                             rel=1e-5)
        assert out["td_target_max"].item() == pytest.approx(exp[m].max().item(), rel=1e-5)
    uncut = nstep_return(td["next", "reward"], td["next", "terminated"], m, torch.zeros(3, 8, len(GAMMAS)),
                         torch.tensor(GAMMAS), 3, 10.0)
    assert not torch.allclose(exp, uncut)  # the cuts changed some targets


def test_n_step_cut_of_one_gives_continuous_actions_one_step_returns():
    """A sampled continuous action is never the policy's mode: Watkins' cut stops every return after one step."""
    batch = make_batch("continuous")
    outs = {}
    for n, cut in ((1, 0.0), (3, 1.0), (3, 0.0)):
        loss = build("continuous", n_step=n, n_step_cut=cut)
        torch.manual_seed(0)
        outs[n, cut] = loss(batch.clone())
        assert loss.n_step == (1 if cut else n)
    for key in ("td_target_mean", "td_target_max", "loss_critic", "loss_actor"):
        assert outs[3, 1.0][key].item() == pytest.approx(outs[1, 0.0][key].item(), rel=1e-6)
    assert outs[3, 0.0]["td_target_mean"].item() != pytest.approx(outs[1, 0.0]["td_target_mean"].item(), rel=1e-3)


def test_n_step_cut_fractions_are_refused_for_continuous_actions_and_out_of_range():
    with pytest.raises(ValueError, match="n_step_cut=0.5: .* 0 or 1 for continuous"):
        build("continuous", n_step=3, n_step_cut=0.5)
    with pytest.raises(ValueError, match=r"n_step_cut=1.5: must be in \[0, 1\]"):
        build("discrete", n_step=3, n_step_cut=1.5)
