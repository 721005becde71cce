"""The loss softens discrete buffer actions with the actor's own probability clip (the original uses the policy's
clip), so an actor built with another clip changes the critic's input too."""
import pytest
import torch

from tests.objectives._build import GAMMAS, A, D, O, make_batch
from torchrl_amago.modules import DEFAULT_DISCRETE_CLIP, ActorHead, DiscreteCritic, MLPTimestepEncoder
from torchrl_amago.modules.trajectory import make_trajectory_encoder
from torchrl_amago.objectives import AMAGOLoss
from torchrl_amago.spaces import ActionSpace

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")  # no SoftUpdate: one forward per loss

Q = torch.tensor([0.0, 1.0, 2.0])  # the critic's Q(s, a) for every s (a constant head)


def _loss(clip):
    torch.manual_seed(0)
    asp = ActionSpace("discrete", A)
    te = MLPTimestepEncoder({"observation": (O,)}, A, d_hidden=D, d_output=D)
    tr = make_trajectory_encoder("gru", D, 64, d_model=D, n_layers=1)
    kw = {} if clip is None else {"discrete_clip": clip}
    actor = ActorHead(tr.emb_dim, asp, len(GAMMAS), d_hidden=D, **kw)
    critic = DiscreteCritic(tr.emb_dim, A, len(GAMMAS), 3, d_hidden=D)
    loss = AMAGOLoss(te, tr, actor, critic, action_space=asp, gammas=GAMMAS, popart=False)
    with torch.no_grad():  # Q(s, a) = Q[a] whatever s, for every member and gamma
        loss.critic_head_params["net", "out", "weight"].zero_()
        loss.critic_head_params["net", "out", "bias"].copy_(Q.repeat(len(GAMMAS)).expand(3, -1))
    return loss


def _expected_q_mean(td, low, high):
    """Hand computation: the buffer action i becomes clamp(one_hot(i), low, high) / its sum, so
    Q(s, a_buf) = (high * Q[i] + low * sum_{j != i} Q[j]) / (high + (A - 1) * low)."""
    idx, m = td["action"], td["mask"]
    q = (high * Q[idx] + low * (Q.sum() - Q[idx])) / (high + (A - 1) * low)
    return (q * m).sum() / m.sum()


@pytest.mark.parametrize("clip", [None, (0.2, 0.6), (1e-6, 1.0)])
def test_loss_softens_buffer_actions_with_the_actors_clip(clip):
    loss = _loss(clip)
    low, high = DEFAULT_DISCRETE_CLIP if clip is None else clip
    assert loss.discrete_clip == (low, high)
    td = make_batch("discrete")
    out = loss(td)
    for g in range(len(GAMMAS)):  # q_mean: Q(s, a_buf) per gamma over the valid steps
        assert out["q_mean"][g].item() == pytest.approx(_expected_q_mean(td, low, high).item(), rel=1e-5)


def test_another_clip_changes_the_critic_loss():
    td = make_batch("discrete")
    default, wide = _loss(None)(td), _loss((0.2, 0.6))(td)
    assert not torch.allclose(default["loss_critic"], wide["loss_critic"])
