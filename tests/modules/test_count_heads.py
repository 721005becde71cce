"""modules/count_heads.py: the counts ride beside the embeddings unchanged, the heads' count term is exactly
coef(h) . psi(count_a), and what one action's data teaches about repeats carries to the other actions."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.modules.count_heads import (CountActorHead, CountDiscreteCritic, CountsBesideEmbedding,
                                               CountsPassThrough, count_features)
from torchrl_amago.modules.heads import DiscreteCritic
from torchrl_amago.modules.timestep import MLPTimestepEncoder
from torchrl_amago.modules.trajectory import TransformerTrajEncoder
from torchrl_amago.spaces import ActionSpace

A, D = 5, 8


def test_count_features_are_taken_before_and_log_one_plus_count():
    got = count_features(torch.tensor([0.0, 1.0, 3.0]))
    want = torch.tensor([[0.0, 0.0], [1.0, 0.6931472], [1.0, 1.3862944]])
    assert torch.allclose(got, want, atol=1e-6)


def test_counts_beside_embedding_appends_the_raw_counts():
    tstep = MLPTimestepEncoder({"obs": (3,)}, A, d_hidden=16, d_output=D).eval()  # InputNorm: no stats update
    enc = CountsBesideEmbedding(tstep, A)
    assert enc.emb_dim == D + A and "action_counts" in enc.in_keys
    counts = torch.tensor([[[0.0, 2, 0, 1, 0], [1, 2, 0, 1, 0]]])
    td = TensorDict({"obs": torch.randn(1, 2, 3), "prev_action": torch.zeros(1, 2, A),
                     "prev_reward": torch.zeros(1, 2, 1), "action_counts": counts}, [1, 2])
    out = enc(td.clone())["tstep_emb"]
    assert out.shape == (1, 2, D + A)
    assert torch.equal(out[..., D:], counts)
    assert torch.allclose(out[..., :D], tstep(td.clone())["tstep_emb"])
    with pytest.raises(KeyError, match="action_counts.*--action_counts"):
        enc(td.exclude("action_counts"))


def test_pass_through_encoder_step_mode_equals_sequence_mode_and_keeps_the_counts():
    torch.manual_seed(0)
    inner = TransformerTrajEncoder(6, 10, d_model=D, n_heads=2, d_ff=16, n_layers=1)
    enc = CountsPassThrough(inner, A).eval()
    assert (enc.input_dim, enc.emb_dim, enc.packable) == (6 + A, D + A, inner.packable)
    x, t = torch.randn(2, 7, 6 + A), torch.arange(7).expand(2, 7)
    seq = enc(x, t)
    assert torch.equal(seq[..., D:], x[..., 6:])
    assert torch.allclose(seq[..., :D], inner(x[..., :6], t))
    state = enc.reset_state(enc.init_state(2), torch.ones(2, dtype=torch.bool))
    steps = []
    for i in range(7):
        out, state = enc.step(x[:, i], t[:, i], state)
        steps.append(out)
    assert torch.allclose(torch.stack(steps, 1), seq, atol=1e-5)
    assert enc.state_shapes() == inner.state_shapes()
    with pytest.raises(ValueError, match="TrajectoryEncoder"):
        CountsPassThrough(torch.nn.Linear(3, 3), A)


def test_heads_start_as_their_base_and_add_exactly_coef_times_features():
    torch.manual_seed(0)
    h, counts = torch.randn(4, D), torch.tensor([[0.0, 1, 0, 2, 0]]).expand(4, A)
    critic = CountDiscreteCritic(D, A, num_gammas=3, num_critics=2, d_hidden=16, zero_init_output=False)
    base = DiscreteCritic(D, A, num_gammas=3, num_critics=2, d_hidden=16, zero_init_output=False)
    base.load_state_dict({k: v for k, v in critic.state_dict().items() if not k.startswith("count_term")})
    x = torch.cat([h, counts], -1)
    assert torch.equal(critic(x), base(h))  # the count term starts at zero
    with torch.no_grad():
        critic.count_term.coef.bias.view(2, 3, 2).copy_(torch.tensor([-1.0, 0.5]))  # every critic and gamma
    want = base(h) + (-1.0 * (counts > 0) + 0.5 * torch.log1p(counts))[:, None, None, :]
    assert torch.allclose(critic(x), want, atol=1e-6)
    actor = CountActorHead(D, ActionSpace("discrete", A), num_gammas=3, d_hidden=16)
    with torch.no_grad():
        actor.count_term.coef.bias.fill_(0.0).view(3, 2)[:, 0] = -2.0
    logits = actor(x)
    assert logits.shape == (4, 3, A)
    assert torch.allclose(logits - actor.net(h).unflatten(-1, (3, A)), -2.0 * (counts > 0)[:, None, :])
    with pytest.raises(ValueError, match="count_heads needs discrete"):
        CountActorHead(D, ActionSpace("continuous", 2), num_gammas=1)
    with pytest.raises(ValueError, match="CountDiscreteCritic input"):
        critic(h)


def test_what_action_0_teaches_about_repeats_carries_to_the_other_actions():
    """Trained only on action 0 (Q = -1 when it was taken before, 0 otherwise), the count critic ranks a repeat of
    action 3 below a fresh action 3; a plain critic reading the counts as input does not (its output for action 3
    never gets a gradient)."""
    torch.manual_seed(0)
    n = 256
    h = torch.randn(n, D)
    counts = torch.zeros(n, A)
    counts[:, 0] = torch.randint(0, 3, (n,)).float()
    target = -(counts[:, 0] > 0).float()
    count_critic = CountDiscreteCritic(D, A, num_gammas=1, num_critics=1, d_hidden=16)
    plain = DiscreteCritic(D + A, A, num_gammas=1, num_critics=1, d_hidden=16)
    for critic in (count_critic, plain):
        opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
        for _ in range(200):
            loss = (critic(torch.cat([h, counts], -1))[:, 0, 0, 0] - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.05
    probe = torch.zeros(2, A)
    probe[1, 3] = 1.0  # action 3: fresh, then taken once before
    x = torch.cat([torch.zeros(2, D), probe], -1)
    with torch.no_grad():
        q_count, q_plain = count_critic(x)[:, 0, 0, 3], plain(x)[:, 0, 0, 3]
    assert q_count[1] - q_count[0] < -0.5
    assert abs(q_plain[1] - q_plain[0]) < 0.1
