"""AMAGOLoss and TorchRL's loss options: ``reduction=``, the ``td_error`` priority entry, ``make_value_estimator``.

Reference values: ``reduction="mean"`` (the original's masked mean, tested elsewhere against AMAGO 3.3.0) for
``"sum"`` / ``"none"``; for ``td_error``, the critic loss itself: with one critic and one gamma the MSE critic loss is
the masked mean of the squared TD error, so it must equal the masked mean of ``td_error ** 2``.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torchrl.objectives import ValueEstimators

from torchrl_amago.modules.heads import ActorHead, DiscreteCritic
from torchrl_amago.modules.timestep import MLPTimestepEncoder
from torchrl_amago.modules.trajectory import make_trajectory_encoder
from torchrl_amago.objectives import AMAGOLoss
from torchrl_amago.objectives.packing import plan_packing
from torchrl_amago.spaces import ActionSpace

from ._build import A, D, O, build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")
PADS = (None, 5, 2, 7)  # rows of 8, 5, 2 and 7 valid steps: the short ones pack into one row


def run(loss, td, seed=0):
    torch.manual_seed(seed)
    return copy.deepcopy(loss)(td)


@pytest.mark.parametrize("term", ["loss_actor", "loss_critic"])
def test_reduction_sum_and_none_agree_with_mean(term):
    td = make_batch("discrete", B=4, pad_from=PADS)
    mask = td["mask"]
    # one window per row in all three (REDQ draws its members per row: packed rows would draw others)
    mean = run(build("discrete", pack_windows="never"), td)[term]
    total = run(build("discrete", reduction="sum", pack_windows="never"), td)[term]
    per_step = run(build("discrete", reduction="none"), td)[term]  # "none" never packs
    assert per_step.shape == mask.shape and (per_step[~mask] == 0).all() and per_step.requires_grad
    torch.testing.assert_close(total, per_step.sum())
    torch.testing.assert_close(total / mask.sum(), mean, rtol=1e-5, atol=0)  # mean = sum / valid steps


def test_bad_reduction_is_named():
    with pytest.raises(ValueError, match=r"reduction='avg'.*'mean', 'sum', 'none'"):
        build("discrete", reduction="avg")


def _one_critic_one_gamma(two_hot=False):
    torch.manual_seed(0)
    space = ActionSpace("discrete", A)
    te = MLPTimestepEncoder({"observation": (O,)}, A, d_hidden=D, d_output=D)
    tr = make_trajectory_encoder("transformer", D, 64, d_model=D, n_layers=1, n_heads=2)
    actor = ActorHead(tr.emb_dim, space, 1, d_hidden=D)
    critic = DiscreteCritic(tr.emb_dim, A, 1, 1, d_hidden=D, zero_init_output=False)
    return AMAGOLoss(te, tr, actor, critic, action_space=space, gammas=[0.9])


@pytest.mark.parametrize("pack", ["never", "always"])
def test_td_error_is_the_critics_td_error(pack):
    """One critic, one gamma: mean(td_error^2 over valid steps) is the critic loss; 0 on padding; the same whether
    the loss packs the windows or not (it is written per step of the input batch)."""
    loss = _one_critic_one_gamma()
    loss.pack_windows = pack
    loss.trajectory_encoder.eval()  # no dropout: the two passes compared below would draw different masks
    td = make_batch("discrete", B=4, pad_from=PADS)
    out = run(loss, td)
    err = td["td_error"]
    assert err.shape == (*td.batch_size, 1) and not err.requires_grad and (err[~td["mask"]] == 0).all()
    valid = td["mask"]
    torch.testing.assert_close((err[..., 0][valid] ** 2).mean(), out["critic_loss_unweighted"], rtol=1e-4, atol=0)
    ref = make_batch("discrete", B=4, pad_from=PADS)
    assert loss.packable and plan_packing(td["mask"]).rows == 3  # "always" really packs these 4 windows
    loss.pack_windows = "never"
    run(loss, ref)
    torch.testing.assert_close(err, ref["td_error"], rtol=1e-4, atol=1e-6)


def test_importance_weights_are_not_silently_ignored():
    td = make_batch("discrete")
    td["priority_weight"] = torch.rand(td.shape)
    with pytest.warns(UserWarning, match="does not apply the importance weights"):
        run(build("discrete"), td)


def test_td_error_key_follows_set_keys():
    loss = build("discrete")
    loss.set_keys(priority=("prio", "err"))
    td = make_batch("discrete")
    run(loss, td)
    assert ("prio", "err") in td.keys(True) and "td_error" not in td.keys()


@pytest.mark.parametrize("args", [(), (ValueEstimators.TD0,), (ValueEstimators.TDLambda,)])
def test_make_value_estimator_is_refused_with_the_reason(args):
    loss = build("discrete")
    with pytest.raises(NotImplementedError, match=r"multi-gamma n-step.*AMAGOLoss\(gammas=.*n_step=") as err:
        loss.make_value_estimator(*args, gamma=0.99)
    assert "gamma=0.99" in str(err.value) and "None" not in str(err.value)  # names the call as it was made
    with pytest.raises(NotImplementedError, match="multi-gamma"):
        loss.value_estimator  # TorchRL builds the default estimator on first access
