"""One check for "this update equals the eager one" (compiled loss, CUDA graphs): N updates on the same batches,
each from the eager run's state, compared on losses, gradients, statistics and weights after the step. (Each update
starts from the eager state: Adam turns rounding differences of near-zero gradients into steps of the learning
rate, so two runs drift apart however equal their maths.)"""
from __future__ import annotations

from typing import Callable

import torch


def assert_updates_equal(eager, other, n: int, copy_state: Callable) -> None:
    """`copy_state(other, eager)` puts the eager run's state into `other` before each of the `n` updates."""
    batches = [eager.sampler.sample() for _ in range(n)]
    for tr in (eager, other):
        it = iter(batches)
        tr.sampler.sample = lambda it=it: next(it)
    mu_before = eager.loss.popart.mu.clone()
    for i in range(n):
        copy_state(other, eager)
        outs, grads = [], []
        for tr in (eager, other):
            torch.manual_seed(100 + i)
            outs.append(tr.learner.update().to("cpu"))
            grads.append([p.grad.detach().cpu().clone() for p in tr.learner.params])
        assert float(outs[0]["nonfinite_skipped"]) == 0 and float(outs[1]["nonfinite_skipped"]) == 0
        for key in ("loss_actor", "loss_critic", "td_target_mean", "popart_mu", "popart_sigma", "grad_norm"):
            torch.testing.assert_close(outs[1][key], outs[0][key], rtol=1e-4, atol=1e-5,
                                       msg=lambda m, i=i, key=key: f"update {i}: {key}: {m}")
        for (name, _), g_eager, g_other in zip(eager.loss.named_parameters(), *grads):
            torch.testing.assert_close(g_other, g_eager, rtol=1e-3, atol=1e-6,
                                       msg=lambda m, i=i, name=name: f"update {i}: grad {name}: {m}")
        # after the step: statistics (PopArt, input norms) and target weights as tight as the losses; weights within
        # one step (Adam moves a weight whose gradient is ~0 by up to about the learning rate either way)
        params = {name for name, _ in eager.loss.named_parameters()}
        other_state = other.loss.state_dict()
        for name, value in eager.loss.state_dict().items():
            atol = eager.cfg.learning_rate if name in params else 1e-6
            torch.testing.assert_close(other_state[name].cpu(), value.cpu(), rtol=1e-4, atol=atol,
                                       msg=lambda m, i=i, name=name: f"update {i}: {name}: {m}")
    assert not torch.equal(eager.loss.popart.mu, mu_before)  # the statistics moved, and moved alike
