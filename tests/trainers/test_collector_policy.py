"""The training collector acts with the trainer's own policy module. TorchRL's `Collector` acts with a copy of a
policy that has any weight or buffer off `policy_device`; the copy's weights share storage with the learner's but
not their version counters, so its cached sigma-reparam weights (`SigmaReparam.cached_weight`, keyed on those
counters) stayed those of its first step. On CUDA that copy collected every batch while the trained policy was
evaluated: T-Maze training returns stayed near 0 while evals reached 0.45-0.6 (docs/scaling.md, "On a GPU").
Since the weight probe (`modules/weight_cache.py`) the copy sees those writes too."""
import pytest
import torch

from tests.trainers.test_reliability import trainer

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_collector_acts_with_the_trainers_own_policy(tmp_path, device):
    tr = trainer(tmp_path, device=device)
    tensors = list(tr.actor.parameters()) + list(tr.actor.buffers())
    assert tensors and all(t.device.type == device for t in tensors)  # nothing left for the collector to move
    assert tr.collector.get_weights_fn is None and tr.collector.policy is tr.actor  # no copy
    tr.collection.collect(tr.store)
    tr.learner.learn(tr.cfg.grads_per_epoch)
    assert tr.grad_steps > 0 and tr.collector.policy is tr.actor
    tr.close()


def test_a_collector_copy_of_the_policy_sees_the_learners_in_place_updates():
    """TorchRL's copy (`Collector._get_policy_and_device`, reproduced here on CPU) shares the learner's storage but
    not its version counters: it used to act with the sigma-reparam weights it cached first, until its caches were
    cleared; its weight probe now sees the learner's in-place updates."""
    import functools
    from copy import deepcopy

    from tensordict import TensorDict
    from torchrl.collectors.utils import _map_weight

    from tests.modules.test_acting_fast_paths import _policy, _td

    policy = _policy(one_hot=False).eval()
    policy.params_key, policy.out_keys = "actor_params", policy.out_keys + ["actor_params"]  # the raw actor output
    weights = TensorDict.from_module(policy, as_module=True)
    with weights.data.to("meta").to_module(policy, preserve_module_state=False):
        copy = deepcopy(policy)
    weights.apply(functools.partial(_map_weight, policy_device=torch.device("cpu")),
                  filter_empty=False).to_module(copy, preserve_module_state=False)

    td = _td()

    def params(p):
        p.reset_state()
        with torch.no_grad():
            return p(td.clone())[p.params_key]

    before = params(copy)
    torch.testing.assert_close(before, params(policy))
    with torch.no_grad():  # an optimizer step: in place, on the learner's tensors
        for w in policy.parameters():
            w.add_(0.05 * torch.randn_like(w))
    assert not torch.allclose(params(policy), before, atol=1e-4)
    torch.testing.assert_close(params(copy), params(policy))  # no stale W_hat in the copy
