"""Masks at the seam with TorchRL: AMAGOLoss reads its validity mask as TorchRL's ``loss_mask_key`` says, and the
sequence replay writes the mask where TorchRL's losses look for it (``("collector", "mask")``), so both kinds of
loss leave the same padded steps out of the same batch.

Reference values: AMAGOLoss on the same batch with the mask given under its own key (``"mask"``); TorchRL's
DQNLoss on the valid steps alone (a flat batch without padding, no mask at all).
"""
from __future__ import annotations

import copy

import pytest
import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.modules import QValueModule
from torchrl.objectives import DQNLoss

from torchrl_amago import keys as K

from ._build import build, make_batch

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def run(loss, td, seed=0):
    """One forward of a copy of `loss` (PopArt statistics move at every call) with a fixed REDQ draw."""
    torch.manual_seed(seed)
    return copy.deepcopy(loss)(td).detach()


def assert_same(out, ref):
    for key in ("loss_actor", "loss_critic", "valid_steps", "td_target_mean", "q_mean"):
        torch.testing.assert_close(out[key], ref[key], msg=key)


def garbage_on_padding(td):
    """Padded steps may hold anything: huge rewards there change every loss that reads them."""
    td = td.clone()
    td["next", "reward"] = torch.where(td["mask"].unsqueeze(-1), td["next", "reward"], 1e6)
    return td


def test_torchrl_collector_mask_alone_is_read():
    """A batch that carries its padding only as TorchRL's ("collector", "mask") (e.g. SliceSampler(pad_output=True)
    reshaped to [B, T]) gives the loss of the same batch with "mask"."""
    loss, td = build("discrete"), garbage_on_padding(make_batch("discrete"))
    ref = run(loss, td)
    torchrl_style = td.exclude("mask")
    torchrl_style[K.TORCHRL_MASK] = td["mask"].unsqueeze(-1)  # TorchRL's masks carry a trailing 1
    assert_same(run(loss, torchrl_style), ref)
    assert ref["valid_steps"] == td["mask"].sum() and ref["td_target_max"] < 1e3  # no garbage reached the targets


def test_both_masks_are_anded():
    loss, td = build("discrete"), garbage_on_padding(make_batch("discrete"))
    ref = run(loss, td)
    both = td.clone()
    both["mask"] = torch.ones_like(td["mask"])
    both[K.TORCHRL_MASK] = td["mask"]
    assert_same(run(loss, both), ref)


def test_missing_mask_names_both_keys_and_the_switch():
    """No mask under either key is an error (an all-valid default would silently train on padding); the message
    says how to declare unpadded windows."""
    loss = build("discrete")
    with pytest.raises(ValueError, match=r"no key 'mask' or \('collector', 'mask'\).*loss_mask_key = None"):
        loss(make_batch("discrete").exclude("mask"))


def test_loss_mask_key_none_counts_every_step():
    """TorchRL's switch for "no masking": the loss equals the one with an all-True mask."""
    loss, td = build("discrete"), make_batch("discrete")
    ref = run(loss, td.set("mask", torch.ones_like(td["mask"])))
    loss.loss_mask_key = None
    assert_same(run(loss, td.exclude("mask")), ref)
    assert run(loss, make_batch("discrete"))["valid_steps"] == td.numel()  # a "mask" present is ignored too


def test_loss_mask_key_names_one_entry():
    """A key: that entry only ("mask" is then not read); missing, it is named."""
    loss, td = build("discrete"), garbage_on_padding(make_batch("discrete"))
    ref = run(loss, td)
    mine = td.clone()
    mine["my", "valid"] = td["mask"]
    mine["mask"] = torch.ones_like(td["mask"])
    loss.loss_mask_key = ("my", "valid")
    assert_same(run(loss, mine), ref)
    with pytest.raises(ValueError, match=r"no key \('my', 'valid'\)"):
        loss(td)


def test_torchrl_loss_and_ours_leave_out_the_same_padded_steps():
    """The sequence replay's padded batch: TorchRL's DQNLoss (loss_mask_key "auto", the default) equals DQNLoss on
    the valid steps alone, although the padded steps hold a reward of 1e6; AMAGOLoss counts the same steps."""
    from torchrl.data import Categorical

    from torchrl_amago.data import make_sequence_replay

    td = garbage_on_padding(make_batch("discrete", B=4, T=8, pad_from=(None, 5, 2, 7)))
    rb = make_sequence_replay(1000, 8, 4, trim=False)  # its own padded windows: masks written as the loss reads
    flat = td.reshape(-1)
    rb.extend_trials(flat[td["mask"].reshape(-1)], td["mask"].sum(1))
    torch.manual_seed(0)
    batch = rb.sample()
    assert (~batch["mask"]).any() and torch.equal(batch[K.TORCHRL_MASK], batch["mask"])
    batch["next", "reward"] = torch.where(batch["mask"].unsqueeze(-1), batch["next", "reward"], 1e6)

    spec = Categorical(3)
    torch.manual_seed(0)
    qnet = TensorDictSequential(TensorDictModule(nn.Linear(5, 3), ["observation"], ["action_value"]),
                                QValueModule(spec=spec))
    dqn = DQNLoss(qnet, action_space=spec, delay_value=True)
    dqn.make_value_estimator(gamma=0.9)
    padded = dqn(batch.clone())["loss"]
    valid_only = dqn(batch[batch["mask"]].exclude("mask", K.TORCHRL_MASK))["loss"]
    torch.testing.assert_close(padded, valid_only)
    assert padded < 100  # without the mask the 1e6 rewards dominate: (1e6)^2 per padded step
    dqn.loss_mask_key = None
    assert dqn(batch.clone())["loss"] > 1e9

    amago = build("discrete")
    assert run(amago, batch)["valid_steps"] == batch["mask"].sum()
