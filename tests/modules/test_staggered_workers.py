"""Stateful acting across processes: two TorchRL collector workers, each with a batched env whose sub-envs run
trials of different lengths (so they reset at different steps, and trials span collector batches). The actor
head's outputs recorded while acting (step mode, per-env KV cache / RNN state in each worker, cleared at
``is_init``) equal a fresh sequence-mode pass over each env's own trial through the modules the loss uses.

This is the bug class of actors resetting at different times: a state shared between workers (e.g. through
the shared-memory weight sync), kept across a reset, or mixed between envs changes the outputs."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch

from tests.modules.staggered_env import make_staggered_env
from torchrl_amago.modules import ActorHead, AMAGOPolicy, DiscreteCritic, MLPTimestepEncoder, make_trajectory_encoder
from torchrl_amago.objectives import AMAGOLoss
from torchrl_amago.spaces import action_space_from_spec

LENGTHS = [(2, 3, 5), (4, 6, 7)]  # worker 0's and worker 1's envs; all <= max_seq_len (no rolling cache)
T, MAX_SEQ_LEN, PARAMS = 8, 8, "actor_params"


def _modules(encoder):
    torch.manual_seed(0)
    env = make_staggered_env(LENGTHS[0])
    space = action_space_from_spec(env.action_spec)
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=16, d_output=16)
    kw = {"n_heads": 2} if encoder == "transformer" else {}
    traj = make_trajectory_encoder(encoder, tstep.emb_dim, MAX_SEQ_LEN, d_model=16, n_layers=2, **kw)
    actor = ActorHead(traj.emb_dim, space, num_gammas=2, d_hidden=16)
    critic = DiscreteCritic(traj.emb_dim, space.dim, 2, 2, d_hidden=16)
    loss = AMAGOLoss(tstep, traj, actor, critic, action_space=space, gammas=[0.9, 0.99])
    return AMAGOPolicy(tstep, traj, actor, space, params_key=PARAMS), loss


def _collect(policy, n_batches):
    from torchrl.collectors import MultiSyncCollector

    factories = [functools.partial(make_staggered_env, lengths, seed) for seed, lengths in enumerate(LENGTHS)]
    frames = len(LENGTHS) * len(LENGTHS[0]) * T
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collector = MultiSyncCollector(factories, policy, frames_per_batch=frames, total_frames=frames * n_batches)
        try:
            for data in collector:
                out.append(data.clone())
                collector.update_policy_weights_()  # TorchRL's weight sync between every batch
        finally:
            collector.shutdown()
    return out


def _sequence_params(loss, trial):
    """Actor params of a fresh sequence-mode pass over one trial [L] through the loss's encoders."""
    batch = trial.unsqueeze(0)
    mask = torch.ones(batch.batch_size, dtype=torch.bool)
    modules = (loss.timestep_encoder, loss.trajectory_encoder, loss.actor_head)
    for m in modules:
        m.eval()  # as while acting: no dropout, InputNorm statistics frozen
    with torch.no_grad():
        emb = loss._backbone(batch, mask)  # [1, L + 1, D]: the trial's L roots and its last "next"
        return loss.actor_head(emb[0, : trial.batch_size[0]])


@pytest.mark.parametrize("encoder", ["transformer", pytest.param("gru", marks=pytest.mark.slow)])
def test_staggered_resets_across_two_workers_match_sequence_mode(encoder):
    policy, loss = _modules(encoder)
    batches = _collect(policy, n_batches=3)
    assert policy.state is None  # the main process never acted: the workers hold their own acting state
    data = torch.stack(batches, -1)  # [workers, envs, T, batches] -> each env's steps in time order
    data = data.permute(0, 1, 3, 2).reshape(len(LENGTHS) * len(LENGTHS[0]), -1)
    init = data["is_init"][..., 0]
    # the test's premise: envs reset at different steps, and trials continue across batches
    assert (init.any(0) & ~init.all(0)).sum() >= 5
    traj = data["collector", "traj_ids"]
    n_trials = 0
    for row in range(data.batch_size[0]):
        for tid in traj[row].unique().tolist():
            trial = data[row][traj[row] == tid]
            L = trial.batch_size[0]
            assert torch.equal(trial["time_idx"][:, 0], torch.arange(L)) and bool(trial["is_init"][0])
            expected = _sequence_params(loss, trial)
            torch.testing.assert_close(trial[PARAMS], expected, atol=1e-5, rtol=0)
            n_trials += 1
    spanning = sum(int((traj[:, b * T - 1] == traj[:, b * T]).sum()) for b in (1, 2))  # across batch ends
    assert n_trials >= 20 and spanning >= 3, (n_trials, spanning)
    # guard: the check can fail. The same data through a pass that ignores the trial boundaries (one env's
    # steps as a single sequence, as a state kept across a reset would give) is far from the recorded outputs
    row = data[0, :MAX_SEQ_LEN]  # worker 0's env 0: trials of 2 steps
    merged = row.clone()
    merged["time_idx"] = torch.arange(MAX_SEQ_LEN)[:, None]
    merged["is_init"] = merged["time_idx"] == 0
    wrong = _sequence_params(loss, merged)
    assert (row[PARAMS] - wrong).abs().max().item() > 1e-3
