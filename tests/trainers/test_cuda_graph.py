"""`--cuda_graph`: the update captured as CUDA graphs equals the eager update (losses, gradients, PopArt state,
weights and the LR schedule after N updates), skips non-finite updates as eager does, and refuses by name what it
cannot capture. Off CUDA the same static-buffer path runs eagerly (`capture=False`); the capture itself is tested
where a GPU is."""
import pytest
import torch

from torchrl_amago.trainers import AMAGOTrainer
from torchrl_amago.trainers.scale.graphed_update import GraphedUpdate, check_cuda_graph, make_capturable
from torchrl_amago.trainers.learner import apply_optimizer_settings

from .test_trainer import _make_env, _tiny_cfg
from .update_equivalence import assert_updates_equal

FIXED_SHAPES = dict(trim_windows=False, dropout=0.0)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(tmp_path, name, device="cpu", **kw):
    torch.manual_seed(0)
    return AMAGOTrainer(_tiny_cfg(tmp_path, run_name=name, device=device, **FIXED_SHAPES, **kw), _make_env, _make_env)


def _copy_state_in_place(dst: AMAGOTrainer, src: AMAGOTrainer) -> None:
    """`src`'s weights, optimizer state, learning rate and schedule in `dst`'s own tensors (a captured graph reads
    the tensors it was captured with: `load_state_dict` on the optimizer would replace them)."""
    dst.loss.load_state_dict(src.loss.state_dict())
    for p_dst, p_src in zip(dst.learner.params, src.learner.params):
        for k, v in src.learner.optimizer.state[p_src].items():
            if k in dst.learner.optimizer.state[p_dst]:
                dst.learner.optimizer.state[p_dst][k].copy_(v)
            else:
                dst.learner.optimizer.state[p_dst][k] = v.to(p_dst.device, torch.float32) if k == "step" else v.clone()
    for g_dst, g_src in zip(dst.learner.optimizer.param_groups, src.learner.optimizer.param_groups):
        lr = float(g_src["lr"])
        g_dst["lr"].fill_(lr) if isinstance(g_dst["lr"], torch.Tensor) else g_dst.__setitem__("lr", lr)
    dst.learner.scheduler.last_epoch = src.learner.scheduler.last_epoch


def _assert_graphed_updates_equal(eager: AMAGOTrainer, graphed: AMAGOTrainer, n: int) -> None:
    """`assert_updates_equal`, and the learning rate (a tensor the schedule fills) and step count follow eager's."""
    steps = []

    def copy_state(dst, src):
        _copy_state_in_place(dst, src)
        steps.append(dst.grad_steps)

    assert_updates_equal(eager, graphed, n, copy_state)
    assert float(graphed.learner.optimizer.param_groups[0]["lr"]) == pytest.approx(
        float(eager.learner.optimizer.param_groups[0]["lr"]), rel=1e-6)  # the schedule reached the (captured) step
    assert graphed.grad_steps == steps[-1] + 1 == n


#: the encoders' target copy for every discount (its pass and its soft update run inside the captured parts too)
WITH_COPY = [dict(), dict(target_encoders=True)]


@pytest.mark.parametrize("kw", WITH_COPY, ids=["plain", "copy"])
def test_static_buffer_update_equals_eager_on_cpu(tmp_path, kw):
    """The graphed update's path run eagerly (capture=False): static batch buffers, a capturable AdamW with its
    learning rate in a tensor that the LR schedule fills, the clip with the norm of part 1 and the target step of
    part 2 give the eager update's losses, gradients, statistics, weights and learning rate."""
    eager = _trainer(tmp_path, "eager", **kw)
    eager.train(epochs=2)  # a replay to sample from, and weights that have moved
    graphed = _trainer(tmp_path, "graphed", **kw)
    g = graphed.learner
    g.graphed = GraphedUpdate(g.loss_forward, graphed.total_loss,
                              g.optimizer, g.params, graphed.cfg.grad_clip, g.target_updater, g.precision, capture=False)
    assert isinstance(graphed.learner.optimizer.param_groups[0]["lr"], torch.Tensor)
    _assert_graphed_updates_equal(eager, graphed, n=4)
    assert graphed.learner.graphed.steps == 4
    eager.close()
    graphed.close()


def test_a_non_finite_loss_is_skipped_like_eager(tmp_path):
    """A NaN in the loss: no optimizer, schedule or target step, the guard counts it; the next update steps."""
    tr = _trainer(tmp_path, "nan")
    tr.train(epochs=2)
    g = tr.learner
    g.graphed = GraphedUpdate(g.loss_forward, tr.total_loss, g.optimizer, g.params, tr.cfg.grad_clip, g.target_updater,
                              g.precision, capture=False)
    before = {k: v.clone() for k, v in tr.loss.state_dict().items() if "target" in k or "critic" in k}
    steps, lr = tr.grad_steps, float(tr.learner.optimizer.param_groups[0]["lr"])
    real_total = tr.total_loss
    tr.learner.graphed.total_loss = lambda out: real_total(out) * float("nan")
    out = tr.learner.update()
    assert float(out["nonfinite_skipped"]) == 1 and tr.learner.guard.skipped == 1 and tr.grad_steps == steps
    assert float(tr.learner.optimizer.param_groups[0]["lr"]) == lr and tr.learner.graphed.steps == 0
    after = tr.loss.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    tr.learner.graphed.total_loss = real_total
    out = tr.learner.update()
    assert float(out["nonfinite_skipped"]) == 0 and tr.grad_steps == steps + 1 and tr.learner.guard.streak == 0
    tr.close()


@pytest.mark.parametrize("cfg_kw, packs, world, named", [
    (dict(device="cpu"), False, 1, "--device cuda"),
    (dict(trim_windows=True), False, 1, "--no-trim_windows"),
    (dict(), True, 1, "pack_windows='never'"),
    (dict(compile_loss="reduce-overhead"), False, 1, "--compile_loss"),
    (dict(), False, 2, "torchrun"),
])
def test_what_cannot_be_captured_is_refused_by_name(tmp_path, cfg_kw, packs, world, named):
    kw = dict(trim_windows=False, cuda_graph=True)
    kw.update(cfg_kw)
    device = torch.device(kw.pop("device", "cuda"))
    cfg = _tiny_cfg(tmp_path, **kw)
    with pytest.raises(ValueError, match=named):
        check_cuda_graph(cfg, device, packs, world)


def test_cuda_graph_on_a_cpu_run_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--cuda_graph .*--device cuda"):
        AMAGOTrainer(_tiny_cfg(tmp_path, cuda_graph=True, trim_windows=False), _make_env, _make_env)


def test_an_optimizer_without_a_capturable_step_is_named():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="SGD has no capturable mode"):
        make_capturable(torch.optim.SGD(p, lr=0.1), torch.device("cpu"))


def test_a_graph_checkpoint_resumes_eagerly(tmp_path):
    """A `--cuda_graph` run's optimizer state (tensor learning rate, capturable) loaded by an eager run: the
    learning rate is a float again, capturable is off, and the next step runs."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=1e-3, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    make_capturable(opt, torch.device("cpu"))
    w.sum().backward()
    opt.step()
    sched.step()
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) and opt.param_groups[0]["capturable"]
    state, sched_state = opt.state_dict(), sched.state_dict()
    w2 = torch.nn.Parameter(torch.ones(3))
    opt2 = torch.optim.AdamW([w2], lr=1e-3, fused=True)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: min(1.0, (s + 1) / 10))
    opt2.load_state_dict(state)
    sched2.load_state_dict(sched_state)
    apply_optimizer_settings(opt2, sched2, 1e-3, 0.0)
    assert opt2.param_groups[0]["lr"] == pytest.approx(2e-4) and opt2.param_groups[0]["capturable"] is False
    w2.sum().backward()
    opt2.step()
    assert torch.all(w2 < 1)


@cuda
@pytest.mark.parametrize("kw", WITH_COPY, ids=["plain", "copy"])
def test_captured_update_equals_eager_on_cuda(tmp_path, kw):
    """The real capture: after 3 eager warm-up updates the update is two CUDA graph replays, and each update equals
    the eager one from the same state on the same batch (the state is copied into the graphed run's own tensors, so
    a graph that kept stale weights or a stale learning rate would fail)."""
    eager = _trainer(tmp_path, "eager", device="cuda", **kw)
    eager.train(epochs=2)
    graphed = _trainer(tmp_path, "graphed", device="cuda", cuda_graph=True, **kw)
    _assert_graphed_updates_equal(eager, graphed, n=6)
    g = graphed.learner.graphed
    assert g.captured and g.step_graph is not None and g.steps == 6
    eager.close()
    graphed.close()


@cuda
def test_graphed_run_learns_and_acts_with_its_current_weights(tmp_path):
    """A whole --cuda_graph run: its updates are replays, and the policy that collects acts with the replayed
    weights (the acting caches of sigma-reparam and InputNorm are dropped before it acts)."""
    tr = _trainer(tmp_path, "run", device="cuda", cuda_graph=True, epochs=3)
    tr.train()
    assert tr.learner.graphed.captured and tr.grad_steps > tr.learner.graphed.warmup
    tr.collection.collect(tr.store)  # refreshes the caches, then acts
    for m in tr.policy.modules():
        if hasattr(m, "cached_weight"):
            torch.testing.assert_close(m.cached_weight(), m.effective_weight().detach())
    tr.close()


@cuda
def test_a_captured_update_reads_the_cql_scale_filled_after_capture(tmp_path):
    """--cql_ramp fills `loss.cql_scale` in place between updates: a replay of the captured forward on one batch at
    scale 0 and at scale 1, each from the same state (the forward moves the PopArt statistics; `load_state_dict` copies
    into the captured tensors) and RNG seed, differs by the term, critic_loss_weight x cql_coeff x the logged gap."""
    tr = _trainer(tmp_path, "cql", device="cuda", cuda_graph=True, cql_coeff=0.1, cql_ramp=(0.0, 1.0))
    tr.train(epochs=3)  # 6 updates: captured after the 3 eager warm-up steps
    g = tr.learner.graphed
    assert g.captured
    batch = tr.sampler.sample()
    state = {k: v.clone() for k, v in tr.loss.state_dict().items()}
    outs = []
    for scale in (0.0, 1.0):
        tr.loss.load_state_dict(state)
        tr.loss.cql_scale.fill_(scale)
        torch.manual_seed(0)
        outs.append(g.forward_backward(batch)[0].to("cpu"))
    gap = float(outs[1]["cql_gap"])
    assert gap > 0
    diff = float(outs[1]["loss_critic"]) - float(outs[0]["loss_critic"])
    assert diff == pytest.approx(tr.loss.critic_loss_weight * 0.1 * gap, rel=1e-4)
    tr.close()
