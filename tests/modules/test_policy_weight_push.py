"""Weights reach every collector worker through TorchRL's plain ``collector.update_policy_weights_()`` (issue 65,
item 6).

The probe's case (interop.md seam A): the acting caches of AMAGOPolicy (sigma-reparam W_hat, InputNorm constants)
are keyed on the tensors' version counters, and TorchRL's weight sync writes the workers' weights through ``.data``
or from another process, which no counter sees; without ``policy.bump_weights_version()`` a MultiSyncCollector's
workers acted with new plain weights and stale cached ones (drift 0.08 -> 0.24 over 5 batches). Here a real 2-worker
MultiSyncCollector (loopback, CPU) gets optimizer steps pushed with ``update_policy_weights_()`` only; every acted
output must equal the learner policy's on the same inputs."""
import copy
import warnings

import torch
from tensordict import TensorDict

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.modules import ActorHead, AMAGOPolicy, MLPTimestepEncoder, make_trajectory_encoder
from torchrl_amago.spaces import action_space_from_spec


def make_env():
    return make_amago_env(TMaze(2, corridor_length=3, seed=1))  # 4-step trials


def make_policy():
    torch.manual_seed(0)
    env = make_env()
    space = action_space_from_spec(env.action_spec)
    ts = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=16, d_output=16)
    tr = make_trajectory_encoder("transformer", 16, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)
    head = ActorHead(16, space, num_gammas=2, d_hidden=16)
    return AMAGOPolicy(ts, tr, head, space, params_key="params", deterministic=True)


def replay(policy, batch):
    """The actor outputs of a fresh copy of ``policy`` on the batch's observations, step by step ([rows, T, ...])."""
    rows = batch.reshape(-1, batch.shape[-1])
    fresh = policy.fresh_copy()
    keys = [k for k in rows.keys() if k not in ("params", "action", "next", "collector")]
    return torch.stack([fresh(rows[:, t].select(*keys).clone())["params"] for t in range(rows.shape[1])], 1)


def optimizer_step(policy, opt, seed):
    g = torch.Generator().manual_seed(seed)
    for p in policy.parameters():
        p.grad = 0.5 * torch.randn(p.shape, generator=g)
    opt.step()


def test_update_policy_weights_alone_reaches_every_worker():
    from torchrl.collectors import MultiSyncCollector

    warnings.filterwarnings("ignore", category=FutureWarning)
    policy = make_policy()
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    collector = MultiSyncCollector([make_env, make_env], policy, frames_per_batch=16, total_frames=16 * 4)
    try:
        batches = iter(collector)
        first = next(batches)
        torch.testing.assert_close(first["params"].reshape(replay(policy, first).shape), replay(policy, first),
                                   rtol=0, atol=1e-5)
        for k in range(3):
            before = copy.deepcopy(policy)
            optimizer_step(policy, opt, k)  # in place, in the learner process: no bump_weights_version()
            collector.update_policy_weights_()
            batch = next(batches)
            acted = batch["params"].reshape(replay(policy, batch).shape)
            assert batch.reshape(-1, batch.shape[-1]).shape[0] == 4  # both workers' envs
            # (workers and this process may differ in thread count, hence float rounding: stale caches differ by >0.1)
            torch.testing.assert_close(acted, replay(policy, batch), rtol=0, atol=1e-5)
            assert (acted - replay(before, batch)).abs().max() > 0.1  # the step did change what is acted
    finally:
        collector.shutdown()


def test_weights_written_through_data_are_noticed_in_process():
    """The single-process form of the same write: ``TensorDict.from_module(copy).data.update_(new)``, as TorchRL's
    receivers and a Collector's local copy do, bumps no version counter; the copy must still act with the new
    weights at its next step."""
    policy, other = make_policy(), make_policy()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn_like(p))
    td = make_env().reset()
    policy(td.clone())  # builds the caches
    TensorDict.from_module(policy).data.update_(TensorDict.from_module(other).data)
    policy.reset_state()
    other.reset_state()
    torch.testing.assert_close(policy(td.clone())["params"], other(td.clone())["params"], rtol=0, atol=0)
