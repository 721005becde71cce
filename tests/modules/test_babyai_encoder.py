"""BabyAITimestepEncoder: shapes on [N] and [B, T] batches, rl2 hiding, gradients into every branch, and that the
mission tokens, the grid cells and the extra features all change the output."""
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded

from torchrl_amago.modules.babyai_encoder import BabyAITimestepEncoder

SHAPES = {"image": (7, 7, 3), "mission": (9,), "extra": (5,)}
A = 7


def batch(*lead, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict({
        "image": torch.randint(0, 11, (*lead, 7, 7, 3), generator=g).to(torch.uint8),
        "mission": torch.randint(0, 31, (*lead, 9), generator=g).to(torch.int32),
        "extra": torch.rand(*lead, 5, generator=g),
        "prev_action": torch.nn.functional.one_hot(torch.randint(0, A, lead, generator=g), A).float(),
        "prev_reward": torch.rand(*lead, 1, generator=g),
    }, batch_size=lead)


@pytest.mark.parametrize("grid_net,mission_net", [("cnn", "flat"), ("mlp", "rnn")])
def test_shapes_any_batch_and_in_keys(grid_net, mission_net):
    enc = BabyAITimestepEncoder(SHAPES, A, grid_net=grid_net, mission_net=mission_net, emb_dim=40)
    assert enc.emb_dim == 40 and enc.out_keys == ["tstep_emb"]
    assert set(enc.in_keys) == {"image", "mission", "extra", "prev_action", "prev_reward"}
    out = enc(batch(5))["tstep_emb"]
    assert out.shape == (5, 40) and torch.isfinite(out).all()
    bt = batch(3, 4)
    out2 = enc(bt.clone())["tstep_emb"]
    assert out2.shape == (3, 4, 40)
    # [B, T] equals running each step as an [N] batch (no mixing across the batch)
    flat = enc(bt.reshape(12).clone())["tstep_emb"].reshape(3, 4, 40)
    assert torch.allclose(out2, flat, atol=1e-5)


def test_every_input_changes_the_output_and_gets_gradients():
    torch.manual_seed(0)
    enc = BabyAITimestepEncoder(SHAPES, A, grid_net="cnn", emb_dim=32)
    td = batch(6)
    base = enc(td.clone())["tstep_emb"]
    for key, change in (("mission", lambda x: (x + 1) % 31), ("image", lambda x: (x + 1) % 11),
                        ("extra", lambda x: 1 - x), ("prev_reward", lambda x: x + 5.0),
                        ("prev_action", lambda x: x.roll(1, -1))):
        td2 = td.clone()
        td2.set(key, change(td2.get(key)))
        out = enc(td2)["tstep_emb"]
        assert (out - base).abs().max() > 1e-3, key
    # a different word at one mission position only changes the output
    td2 = td.clone()
    td2["mission"][:, 4] = (td2["mission"][:, 4] + 3) % 31
    assert (enc(td2)["tstep_emb"] - base).abs().max() > 1e-3
    enc.zero_grad()
    enc(td.clone())["tstep_emb"].square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_hide_rl2s_and_hide_rewards():
    enc = BabyAITimestepEncoder(SHAPES, A, hide_rl2s=True, emb_dim=16)
    td = batch(4)
    td2 = td.clone()
    td2["prev_reward"] += 3.0
    td2["prev_action"] = td2["prev_action"].roll(1, -1)
    assert torch.allclose(enc(td.clone())["tstep_emb"], enc(td2)["tstep_emb"])
    enc = BabyAITimestepEncoder(SHAPES, A, hide_rewards=True, emb_dim=16)
    td3 = td.clone()
    td3["prev_reward"] += 3.0
    assert torch.allclose(enc(td.clone())["tstep_emb"], enc(td3)["tstep_emb"])
    assert not torch.allclose(enc(td.clone())["tstep_emb"], enc(td2)["tstep_emb"])


def test_out_of_range_tokens_are_clamped_and_pixels_mode():
    enc = BabyAITimestepEncoder(SHAPES, A, emb_dim=16, vocab_size=31)
    td = batch(2)
    td["mission"][:] = 200
    td2 = td.clone()
    td2["mission"][:] = 30
    assert torch.allclose(enc(td)["tstep_emb"], enc(td2)["tstep_emb"])
    pix = BabyAITimestepEncoder({"image": (63, 63, 3), "mission": (9,)}, A, extra_key=None, emb_dim=16)
    assert pix.image_mode == "pixels"
    td = TensorDict({"image": torch.randint(0, 256, (2, 63, 63, 3), dtype=torch.uint8),
                     "mission": torch.zeros(2, 9, dtype=torch.int32), "prev_action": torch.zeros(2, A),
                     "prev_reward": torch.zeros(2, 1)}, batch_size=[2])
    assert pix(td)["tstep_emb"].shape == (2, 16)


def test_from_specs_skips_bookkeeping_and_validates():
    B = (2,)
    spec = Composite(image=Bounded(0, 255, (*B, 7, 7, 3), dtype=torch.uint8),
                     mission=Bounded(0, 30, (*B, 9), dtype=torch.int32),
                     extra=Unbounded((*B, 5)), task_id=Categorical(3, (*B, 1), dtype=torch.int64),
                     episode_end=Categorical(2, (*B, 1), dtype=torch.bool), prev_action=Unbounded((*B, A)),
                     prev_reward=Unbounded((*B, 1)), time_idx=Unbounded((*B, 1), dtype=torch.int64), shape=B)
    enc = BabyAITimestepEncoder.from_specs(spec, OneHot(A, (*B, A)), emb_dim=8)
    assert sorted(enc.obs_keys) == ["extra", "image", "mission"] and enc.action_dim == A
    with pytest.raises(ValueError, match="lacks"):
        BabyAITimestepEncoder({"image": (7, 7, 3)}, A)
    with pytest.raises(ValueError, match="reads only"):
        BabyAITimestepEncoder({**SHAPES, "other": (2,)}, A)
    with pytest.raises(ValueError, match="grid_net"):
        BabyAITimestepEncoder(SHAPES, A, grid_net="transformer")
    with pytest.raises(ValueError, match="image"):
        BabyAITimestepEncoder(SHAPES, A)(batch(2).exclude("image"))
