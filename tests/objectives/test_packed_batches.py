"""Windows packed several to a row (`AMAGOLoss(pack_windows=True)`, `objectives/packing.py`) train exactly like the
same windows one per row: the loss terms, the PopArt / InputNorm statistics and every gradient agree, for the
encoders that can keep windows apart (Transformer: segment-masked attention; per-step encoders), with n-step
returns that must stop at a window's end. Other memories fall back to one window per row."""
import pytest
import torch
from tensordict import TensorDict

from tests.objectives._build import build, make_batch
from tests.objectives.test_trimmed_batches import (_build_with, _fixed_noise_normal, _min_over_all_members,
                                                   assert_same_update, one_update)
from torchrl_amago.modules.trajectory import make_trajectory_encoder
from torchrl_amago.objectives import amago_loss
from torchrl_amago.objectives.packing import pack_mode, packs_here, plan_packing

PAD_FROM = (None, 6, 3, 2, 4, 1)  # lengths 10, 6, 3, 2, 4, 1: T+1 spans 11, 7, 4, 3, 5, 2 -> 3 rows of 11


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def full_fp32_matmuls():
    """TF32 off for the fp32 equivalences on CUDA (restored afterwards): a test or a package that turned it on
    earlier in the process moves CUDA gradients by ~1e-2 against the CPU's and packed against unpacked by ~1e-4
    (measured on an H200); with full fp32 both stay within 7e-6."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _run(batch, kind, critic, encoder, pack, device="cpu", autocast=None, **loss_kw):
    if encoder == "transformer-rope":  # rotary positions read each step's time_idx, which packing keeps
        loss = _build_with(kind, critic, {"pos_emb": "rope"})
        loss.pack_windows, loss.n_step = pack, loss_kw.get("n_step", 1)
    else:
        loss = build(kind, critic, encoder=encoder, pack_windows=pack, **loss_kw)
    loss.trajectory_encoder.eval()  # no dropout: two passes would draw different masks
    loss, batch = loss.to(device), batch.to(device)
    with torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
        return one_update(loss, batch)


def _setup_equivalence(monkeypatch):
    monkeypatch.setattr(amago_loss, "redq_reduce", _min_over_all_members)
    monkeypatch.setattr(torch.distributions.Normal, "rsample", _fixed_noise_normal)
    monkeypatch.setattr(torch.distributions.Normal, "sample", _fixed_noise_normal)


def _on_cpu(update):
    out, state, grads = update
    return out.cpu(), {k: v.cpu() for k, v in state.items()}, {k: v.cpu() for k, v in grads.items()}


def test_plan_fills_rows_first_fit_longest_first():
    mask = make_batch(B=6, T=10, pad_from=PAD_FROM)["mask"]
    plan = plan_packing(mask)
    assert plan.rows == 3
    assert plan.segment[0].tolist() == [0] * 11
    assert plan.segment[1].tolist() == [1] * 7 + [2] * 4  # 7 + 4 = 11
    assert plan.segment[2].tolist() == [4] * 5 + [3] * 3 + [5] * 2 + [-1]
    assert plan.pos[2, :10].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1]
    # a step is real when its successor position belongs to the same window
    assert plan.step_valid[2].tolist() == [True] * 4 + [False] + [True] * 2 + [False] + [True, False]
    assert int(plan.step_valid.sum()) == int(mask.sum())
    seq = TensorDict({"x": torch.arange(11.0).expand(6, 11) + 100 * torch.arange(6.0)[:, None]}, [6, 11])
    packed = plan.pack_sequence(seq, "mask", "is_init", "segment")
    assert packed["is_init"][1, :, 0].nonzero().flatten().tolist() == [0, 7]  # each window starts a memory
    assert packed["x"][1].tolist() == [100.0 + i for i in range(7)] + [200.0 + i for i in range(4)]
    assert packed["x"][2, -1] == 0 and not packed["mask"][2, -1]  # an unused position: zero, masked
    assert plan_packing(torch.ones(4, 5, dtype=torch.bool)) is None  # nothing to save
    not_prefix = torch.tensor([[True, False, True], [True, False, False], [True, False, False]])
    assert plan_packing(not_prefix) is None


@pytest.mark.parametrize("encoder,kind,critic,n_step", [
    ("transformer", "discrete", "auto", 1), ("transformer", "discrete", "auto", 3),
    ("transformer", "continuous", "two_hot", 1), ("transformer-rope", "discrete", "auto", 1),
    ("ff", "continuous", "auto", 2), ("gru", "discrete", "auto", 1)],
    ids=["transformer", "transformer-nstep3", "transformer-twohot", "transformer-rope", "ff-nstep2", "gru-not-packed"])
def test_packed_equals_one_window_per_row(monkeypatch, encoder, kind, critic, n_step):
    _setup_equivalence(monkeypatch)
    batch = make_batch(kind, B=6, T=10, pad_from=PAD_FROM)
    batch["next", "terminated"][1, 5] = True  # a terminal at a window's last step
    packed = _run(batch, kind, critic, encoder, True, n_step=n_step)
    # another row layout sums in another order: float noise ~1e-5 on gradients of size ~10-100
    assert_same_update(packed, _run(batch, kind, critic, encoder, False, n_step=n_step), grad_atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("encoder", ["transformer", "transformer-rope"])
def test_packed_equals_one_window_per_row_on_cuda(monkeypatch, full_fp32_matmuls, encoder):
    """On CUDA the packed rows run SDPA with a boolean mask (the memory-efficient kernel), the unpacked ones plain
    causal attention: both must still give the same update, and the same as on CPU."""
    _setup_equivalence(monkeypatch)
    batch = make_batch("discrete", B=6, T=10, pad_from=PAD_FROM)
    packed = _run(batch, "discrete", "auto", encoder, True, device="cuda", n_step=3)
    assert_same_update(packed, _run(batch, "discrete", "auto", encoder, False, device="cuda", n_step=3),
                       grad_atol=1e-5)
    on_cpu = _run(batch, "discrete", "auto", encoder, True, n_step=3)
    assert_same_update(_on_cpu(packed), on_cpu, grad_atol=1e-4)


@needs_cuda
def test_packed_bf16_autocast_on_cuda_matches_one_window_per_row(monkeypatch):
    """bf16 autocast (`--mixed_precision bf16`): packed and unpacked losses agree to bf16 precision."""
    _setup_equivalence(monkeypatch)
    batch = make_batch("discrete", B=6, T=10, pad_from=PAD_FROM)
    (got, _, grad_g), (want, _, grad_w) = (_run(batch, "discrete", "auto", "transformer", pack, device="cuda",
                                                autocast=torch.bfloat16) for pack in (True, False))
    for key in ("loss_actor", "loss_critic"):
        torch.testing.assert_close(got[key].float(), want[key].float(), rtol=3e-2, atol=1e-2, msg=key)
    total = lambda grads: torch.cat([g.flatten().float() for g in grads.values()])  # noqa: E731
    cos = torch.nn.functional.cosine_similarity(total(grad_g), total(grad_w), dim=0)
    assert cos > 0.99, cos


def test_packed_windows_do_not_see_each_other():
    """Segment-masked attention: changing one window's inputs leaves the other windows of its row unchanged."""
    torch.manual_seed(0)
    enc = make_trajectory_encoder("transformer", 8, 32, d_model=8, n_layers=2, n_heads=2).eval()
    x, t = torch.randn(1, 11, 8), torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3]])
    seg = torch.tensor([[0] * 7 + [1] * 4])
    out = enc(x, t, segment=seg)
    x2 = x.clone()
    x2[0, :7] += 1.0  # the first window only
    out2 = enc(x2, t, segment=seg)
    torch.testing.assert_close(out2[0, 7:], out[0, 7:])
    assert not torch.allclose(out2[0, :7], out[0, :7])
    # the second window alone, in a row of its own, gives the same embeddings
    torch.testing.assert_close(enc(x[:, 7:], t[:, 7:]), out[:, 7:], rtol=1e-5, atol=1e-6)


def test_a_subclass_that_replaces_backbone_is_not_packed():
    """`_backbone` is a documented override point: packing must not bypass it."""
    calls = []

    class OwnBackbone(amago_loss.AMAGOLoss):
        def _backbone(self, tensordict, mask):
            calls.append(tuple(mask.shape))
            return super()._backbone(tensordict, mask)

    loss = build("discrete")
    assert loss.packable
    loss.__class__ = OwnBackbone
    assert not loss.packable
    loss(make_batch(B=6, T=10, pad_from=PAD_FROM))
    assert calls == [(6, 10)]


def test_pack_modes_pick_the_batches_that_are_packed():
    """"cpu" (the default) packs batches on the CPU only: on a GPU the plan's host read costs more than it saves."""
    cpu, gpu_like = torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool, device="meta")
    assert packs_here("cpu", cpu) and not packs_here("cpu", gpu_like)
    assert packs_here("always", gpu_like) and not packs_here("never", cpu)
    assert (pack_mode(True), pack_mode(False), pack_mode("cpu")) == ("always", "never", "cpu")
    with pytest.raises(ValueError, match="pack_windows='gpu'"):
        pack_mode("gpu")
    loss = build("discrete")
    assert loss.pack_windows == "cpu"
    loss.pack_windows = False
    assert loss.pack_windows == "never"
    calls = []
    loss._packed_backbone = lambda *a: calls.append(1)  # never reached when the mode says no
    loss(make_batch(B=6, T=10, pad_from=PAD_FROM))
    assert calls == []
