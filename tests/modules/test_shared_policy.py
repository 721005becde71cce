"""One AMAGOPolicy shared between a training collector and an evaluation rollout (TorchRL's
`LogValidationReward(policy_exploration=policy)` pattern): the evaluation must not touch the training envs' memory.

Reference: the same collector, same seeds, with no evaluation in between. The policy acts deterministically, so
the training envs see identical observations in both runs while their memories agree; the actor outputs
(`params_key`) of every training step must then be equal (exactly, up to float noise)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.trainers import LogValidationReward

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.modules import ActorHead, AMAGOPolicy, MLPTimestepEncoder, make_trajectory_encoder
from torchrl_amago.spaces import action_space_from_spec

H = 4                     # T-Maze corridor: trials of H + 1 = 5 steps
N_TRAIN, STEPS = 4, 3     # 3 steps per collector batch: trials continue across batches
PARAMS = "actor_params"


def _env(n, seed):
    return make_amago_env(TMaze(n, corridor_length=H, seed=seed))


def _policy(encoder, tensordict_state=False):
    torch.manual_seed(0)
    env = _env(1, 0)
    space = action_space_from_spec(env.action_spec)
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=16, d_output=16)
    traj = make_trajectory_encoder(encoder, tstep.emb_dim, 16, d_model=16, n_layers=2,
                                   **({"n_heads": 2} if encoder == "transformer" else {}))
    actor = ActorHead(traj.emb_dim, space, num_gammas=2, d_hidden=16)
    return AMAGOPolicy(tstep, traj, actor, space, deterministic=True, params_key=PARAMS,
                       tensordict_state=tensordict_state)


def _train_params(policy, n_eval, n_batches=4):
    """Actor outputs of every training step; with n_eval, a LogValidationReward rollout on n_eval envs runs with
    the same policy object after every collector batch."""
    def with_primer(env):
        primer = policy.make_tensordict_primer()
        return env if primer is None else env.append_transform(primer)

    fpb = N_TRAIN * STEPS
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collector = Collector(with_primer(_env(N_TRAIN, 1)), policy, frames_per_batch=fpb, total_frames=fpb * n_batches)
        for batch in collector:
            out.append(batch[PARAMS].clone())
            if n_eval:
                hook = LogValidationReward(record_interval=1, record_frames=H + 1, policy_exploration=policy,
                                           environment=with_primer(_env(n_eval, 2)))
                assert hook(batch) is not None  # it really evaluated
        collector.shutdown()
    return torch.cat(out, 1)  # [N_TRAIN, steps, G, P]


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_eval_rollout_with_other_env_count_keeps_training_memory(encoder):
    reference = _train_params(_policy(encoder), n_eval=0)
    shared = _train_params(_policy(encoder), n_eval=2)
    torch.testing.assert_close(shared, reference, atol=1e-5, rtol=0)


def test_same_env_count_needs_the_state_in_the_tensordict():
    """With as many eval envs as training envs, an attribute state cannot tell the two apart (documented);
    `tensordict_state=True` keeps each env's memory in its own TensorDict entries, so any rollout may share it."""
    reference = _train_params(_policy("transformer", tensordict_state=True), n_eval=0)
    shared = _train_params(_policy("transformer", tensordict_state=True), n_eval=N_TRAIN)
    torch.testing.assert_close(shared, reference, atol=1e-5, rtol=0)
    # the premise: the attribute state does lose the memory when the counts are equal
    ref_attr = _train_params(_policy("transformer"), n_eval=0)
    shared_attr = _train_params(_policy("transformer"), n_eval=N_TRAIN)
    assert (shared_attr - ref_attr).abs().max() > 1e-3
