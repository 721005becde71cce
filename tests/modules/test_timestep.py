import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Binary, Bounded, Categorical, Composite, MultiCategorical, MultiOneHot, OneHot, Unbounded

from torchrl_amago.modules.cnn import random_shift
from torchrl_amago.modules.common import symlog
from torchrl_amago.modules.timestep import CNNTimestepEncoder, MLPTimestepEncoder

A = 4


def _td(lead, obs_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = {k: torch.randn(*lead, *s, generator=g) for k, s in obs_shapes.items()}
    data["prev_action"] = torch.randn(*lead, A, generator=g)
    data["prev_reward"] = torch.randn(*lead, 1, generator=g)
    return TensorDict(data, batch_size=lead)


OBS = {"vec": (5,), "scalar": (), "grid": (2, 3)}


@pytest.mark.parametrize("lead", [(7,), (3, 6)])
def test_mlp_encoder_shapes_and_keys(lead):
    enc = MLPTimestepEncoder(OBS, A, d_hidden=32, d_output=24)
    assert enc.in_keys == ["grid", "scalar", "vec", "prev_action", "prev_reward"] and enc.out_keys == ["tstep_emb"]
    assert enc.in_dim == 6 + 1 + 5 + 1 + A and enc.emb_dim == 24
    out = enc.eval()(_td(lead, OBS))["tstep_emb"]
    assert out.shape == (*lead, 24) and out.dtype == torch.float32


def test_mlp_encoder_same_output_for_n_and_bt_layouts():
    enc = MLPTimestepEncoder(OBS, A, d_hidden=32).eval()
    td = _td((3, 6), OBS)
    torch.testing.assert_close(enc(td.clone())["tstep_emb"].reshape(18, -1), enc(td.reshape(18))["tstep_emb"])


def test_mlp_encoder_input_order_is_sorted_obs_then_reward_then_action():
    enc = MLPTimestepEncoder(OBS, A, d_hidden=16, normalize_inputs=False, out_norm=None).eval()
    td = _td((5,), OBS)
    x = torch.cat([td["grid"].reshape(5, 6), td["scalar"].reshape(5, 1), td["vec"], td["prev_reward"],
                   td["prev_action"]], -1)
    torch.testing.assert_close(enc(td)["tstep_emb"], enc.mlp(x))


def test_mlp_encoder_input_norm_excludes_masked_rows_and_only_trains():
    enc = MLPTimestepEncoder({"vec": (3,)}, A, d_hidden=16)
    fresh_stats = {k: v.clone() for k, v in enc.in_norm.state_dict().items()}
    td = _td((2, 5), {"vec": (3,)})
    td["mask"] = torch.tensor([[True] * 5, [True, True, False, False, False]])
    enc.eval()(td.clone())
    assert enc.in_norm._t.item() == 1  # eval mode: no update
    enc.train()
    out1 = enc(td.clone())["tstep_emb"]
    mu1 = enc.in_norm.mu.clone()
    x = torch.cat([td["vec"], td["prev_reward"], td["prev_action"]], -1)[td["mask"]]
    torch.testing.assert_close(mu1, 0.500025 * x.mean(0), atol=1e-5, rtol=1e-4)
    enc.in_norm.load_state_dict(fresh_stats)  # reset the stats, then feed garbage on the padded rows
    garbage = td.clone()
    garbage["vec"][~td["mask"]] = 4.0e3
    garbage["prev_reward"][~td["mask"]] = -7.0
    out2 = enc(garbage)["tstep_emb"]
    torch.testing.assert_close(enc.in_norm.mu, mu1)
    torch.testing.assert_close(out1[td["mask"]], out2[td["mask"]])


def test_hide_rewards_and_hide_rl2s_precedence():
    obs = {"vec": (3,)}
    td = _td((6,), obs)
    td_r = td.clone()
    td_r["prev_reward"] = td_r["prev_reward"] + 5.0
    td_a = td.clone()
    td_a["prev_action"] = td_a["prev_action"] + 5.0

    def changes(enc, other):
        return not torch.allclose(enc(td.clone())["tstep_emb"], enc(other.clone())["tstep_emb"])

    for flags, (rew, act) in [({}, (True, True)), ({"hide_rewards": True}, (False, True)),
                              ({"hide_rl2s": True}, (False, False)),
                              ({"hide_rl2s": True, "hide_rewards": True}, (False, True))]:
        enc = MLPTimestepEncoder(obs, A, d_hidden=16, **flags).eval()
        assert (changes(enc, td_r), changes(enc, td_a)) == (rew, act), flags


def test_auto_scale_widens_to_the_input():
    enc = MLPTimestepEncoder({"wide": (600,)}, A, auto_scale=True)
    assert enc.emb_dim == 605 and enc.mlp.net[0].out_features == 605


def test_missing_key_and_wrong_shapes_raise():
    enc = MLPTimestepEncoder(OBS, A, d_hidden=16)
    td = _td((4,), OBS)
    with pytest.raises(ValueError, match="'vec' missing"):
        enc(td.exclude("vec"))
    bad = td.clone()
    bad["grid"] = torch.randn(4, 3, 2)
    with pytest.raises(ValueError, match=r"'grid' has shape \(4, 3, 2\), expected \[\*, 2, 3\]"):
        enc(bad)
    bad = td.clone(recurse=False)
    bad.batch_size = []
    bad["vec"] = torch.randn(5, 5)
    with pytest.raises(ValueError, match="'vec'"):
        enc(bad)
    bad = td.clone()
    bad["prev_action"] = torch.randn(4, A + 1)
    with pytest.raises(ValueError, match="prev_action"):
        enc(bad)
    with pytest.raises(ValueError, match="prev_reward"):
        enc(td.exclude("prev_reward"))
    bad = td.clone(recurse=False)
    bad.batch_size = []
    bad["mask"] = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask"):
        enc(bad)


def _obs_spec(n=2):
    return Composite(
        observation=Unbounded(shape=(n, 5)),
        extra=Composite(pos=Bounded(-1, 1, shape=(n, 2))),
        prev_action=Unbounded(shape=(n, A)), prev_reward=Unbounded(shape=(n, 1)),
        time_idx=Unbounded(shape=(n, 1), dtype=torch.int64), is_init=Categorical(2, shape=(n, 1), dtype=torch.bool),
        step_count=Unbounded(shape=(n, 1), dtype=torch.int64), _private=Unbounded(shape=(n, 1)),
        shape=(n,),
    )


def test_from_specs_default_keys_and_action_kinds():
    for action_spec in [OneHot(A, shape=(2, A)), Categorical(A, shape=(2,)), Binary(n=A, shape=(2, A)),
                        Bounded(-1, 1, shape=(2, A))]:
        enc = MLPTimestepEncoder.from_specs(_obs_spec(), action_spec, d_hidden=16)
        assert enc.obs_shapes == {("extra", "pos"): (2,), "observation": (5,)}
        assert enc.action_dim == A
    enc = MLPTimestepEncoder.from_specs(_obs_spec(), OneHot(A), obs_keys=["observation"])
    assert enc.in_keys == ["observation", "prev_action", "prev_reward"]
    td = TensorDict({"observation": torch.randn(3, 5), "prev_action": torch.zeros(3, A),
                     "prev_reward": torch.zeros(3, 1)}, [3])
    assert enc(td)["tstep_emb"].shape == (3, 256)
    with pytest.raises(ValueError, match="missing_key"):
        MLPTimestepEncoder.from_specs(_obs_spec(), OneHot(A), obs_keys=["missing_key"])
    with pytest.raises(ValueError, match="MultiOneHot"):
        MLPTimestepEncoder.from_specs(_obs_spec(), MultiOneHot([2, 3]))
    with pytest.raises(ValueError, match="MultiCategorical"):
        MLPTimestepEncoder.from_specs(_obs_spec(), MultiCategorical([2, 3]))
    with pytest.raises(ValueError, match="unsupported action spec"):
        MLPTimestepEncoder.from_specs(_obs_spec(), Unbounded(shape=(2,), dtype=torch.int64))


@pytest.mark.parametrize("backbone,shape,flat", [("nature", (64, 64, 3), 1024), ("drq", (64, 64, 3), 20000),
                                                 ("impala", (64, 64, 3), 1568), ("gridworld", (7, 7, 3), 768)])
def test_cnn_encoder_backbones(backbone, shape, flat):
    enc = CNNTimestepEncoder({"pixels": shape}, A, cnn_type=backbone, d_output=32)
    assert enc.img_proj.in_features == flat and enc.emb_dim == 32
    td = TensorDict({"pixels": torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8),
                     "prev_action": torch.zeros(2, 3, A), "prev_reward": torch.zeros(2, 3, 1)}, [2, 3])
    out = enc.eval()(td)["tstep_emb"]
    assert out.shape == (2, 3, 32)
    torch.testing.assert_close(enc(td.reshape(6))["tstep_emb"], out.reshape(6, 32))


def test_cnn_encoder_channels_first_scaling_and_rl2_symlog():
    torch.manual_seed(0)
    hwc = CNNTimestepEncoder({"pixels": (64, 64, 3)}, A, cnn_type="nature").eval()
    chw = CNNTimestepEncoder({"pixels": (3, 64, 64)}, A, cnn_type="nature").eval()
    assert chw.channels_first and not hwc.channels_first
    chw.load_state_dict(hwc.state_dict())
    img = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    rl2 = {"prev_action": torch.randn(2, A), "prev_reward": torch.tensor([[3.0], [-100.0]])}
    out_hwc = hwc(TensorDict({"pixels": img, **rl2}, [2]))["tstep_emb"]
    out_chw = chw(TensorDict({"pixels": img.permute(0, 3, 1, 2), **rl2}, [2]))["tstep_emb"]
    torch.testing.assert_close(out_hwc, out_chw, atol=1e-4, rtol=1e-4)
    # manual forward: x/128 - 1, backbone, Linear; symlog(rl2) Linear; act(cat) -> Linear -> LayerNorm
    x = img.permute(0, 3, 1, 2).float() / 128 - 1
    feat = hwc.img_proj(hwc.cnn(x).flatten(1))
    r = hwc.rl2_proj(symlog(torch.cat([rl2["prev_reward"], rl2["prev_action"]], -1)))
    ref = hwc.out_norm(hwc.merge(torch.nn.functional.leaky_relu(torch.cat([feat, r], -1), 0.01)))
    torch.testing.assert_close(out_hwc, ref, atol=1e-5, rtol=1e-5)


def test_nature_cnn_delta_orthogonal_init():
    conv = CNNTimestepEncoder({"pixels": (64, 64, 3)}, A, cnn_type="nature").cnn[2]  # 32 -> 64, k4
    w = conv.weight
    centre = w[:, :, 2, 2]
    assert w.abs().sum() == centre.abs().sum() and conv.bias.abs().sum() == 0
    gain2 = 2 / (1 + 0.01**2)
    torch.testing.assert_close(centre.T @ centre, gain2 * torch.eye(32), atol=1e-4, rtol=1e-4)


def test_cnn_from_specs_picks_the_image_key():
    spec = _obs_spec()
    spec["pixels"] = Bounded(0, 255, shape=(2, 7, 7, 3), dtype=torch.uint8)
    enc = CNNTimestepEncoder.from_specs(spec, Categorical(A, shape=(2,)), cnn_type="gridworld")
    assert enc.in_keys == ["pixels", "prev_action", "prev_reward"] and not enc.channels_first


def test_cnn_bad_shapes():
    with pytest.raises(ValueError, match="exactly one image key"):
        CNNTimestepEncoder({"a": (7, 7, 3), "b": (7, 7, 3)}, A, cnn_type="gridworld")
    with pytest.raises(ValueError, match="3-D"):
        CNNTimestepEncoder({"a": (49,)}, A)
    with pytest.raises(ValueError, match="unknown cnn backbone"):
        CNNTimestepEncoder({"a": (7, 7, 3)}, A, cnn_type="resnet")


def test_random_shift_is_a_per_frame_integer_crop():
    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    y = random_shift(x, pad=2)
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(2):  # every output frame is some 8x8 window of the padded frame
        windows = padded[i, 0].unfold(0, 8, 1).unfold(1, 8, 1).reshape(-1, 8, 8)
        assert (windows == y[i, 0]).all(-1).all(-1).any()


def test_drq_aug_changes_only_augmented_frames_in_training():
    torch.manual_seed(0)
    enc = CNNTimestepEncoder({"pixels": (64, 64, 3)}, A, cnn_type="nature", drqv2_aug=True, d_output=16)
    td = TensorDict({"pixels": torch.randint(0, 256, (5, 3, 64, 64, 3), dtype=torch.uint8),
                     "prev_action": torch.zeros(5, 3, A), "prev_reward": torch.zeros(5, 3, 1)}, [5, 3])
    assert enc._n_clean(5) == 2  # ceil(25% of 5)
    img = torch.rand(15, 3, 64, 64)
    aug = enc.augment(img, 5)
    assert torch.equal(aug[:6], img[:6])  # the first 2 sequences (x 3 steps) stay clean
    changed = (aug[6:] != img[6:]).flatten(1).any(-1)
    assert changed.float().mean() > 0.8  # identity shift has probability 1/81 per frame
    out_eval = enc.eval()(td.clone())["tstep_emb"]
    torch.testing.assert_close(enc.eval()(td.clone())["tstep_emb"], out_eval)
    out_train = enc.train()(td.clone())["tstep_emb"]
    torch.testing.assert_close(out_train[:2], out_eval[:2])
    assert not torch.allclose(out_train[2:], out_eval[2:])


def test_mlp_encoder_parameter_count_matches_the_original():
    enc = MLPTimestepEncoder({"observation": (19,)}, A)  # in_dim = 19 + 1 + 4 = 24
    assert sum(p.numel() for p in enc.parameters()) == 407_296
