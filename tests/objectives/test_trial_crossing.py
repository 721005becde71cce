"""TorchRL's own batch layout: `env.rollout(..., break_when_any_done=False)`, collector batches and slices of them
cross hard resets inside a row, with the reset observation at `root[t+1]` (root `is_init` True) and never at
`("next", ...)[t]`. AMAGOLoss and MemoryEmbedding must give every step the values it gets when the same steps are cut
by hand into one window per trial (the sequence replay's layout). Before the cut (objectives/batch.py), the
Transformer's per-step critic loss of a second T-Maze trial was off by up to 16.6 and MemoryEmbedding's states by 1.13
(shared/reviews/interop.md, N08)."""
from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.modules import ActorHead, DiscreteCritic, MLPTimestepEncoder, make_trajectory_encoder
from torchrl_amago.modules.trajectory import trajectory_encoder_names
from torchrl_amago.objectives import AMAGOLoss, MemoryEmbedding
from torchrl_amago.spaces import action_space_from_spec

ENCODERS = [n for n in trajectory_encoder_names() if n != "mamba"]  # mamba-ssm: CUDA only, tested with the GPU suite
TOL = dict(atol=1e-5, rtol=0)


def _modules(env, encoder: str, seed: int = 0):
    torch.manual_seed(seed)
    space = action_space_from_spec(env.action_spec)
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=16, d_output=16)
    kw = {"n_heads": 2} if encoder == "transformer" else {}
    traj = make_trajectory_encoder(encoder, tstep.emb_dim, max_seq_len=16, d_model=16, n_layers=1, **kw)
    actor = ActorHead(16, space, num_gammas=2, d_hidden=16)
    critic = DiscreteCritic(16, space.dim, num_gammas=2, num_critics=1, d_hidden=16, zero_init_output=False)
    return tstep, traj, actor, critic, space


def _loss(env, encoder: str, **kw) -> AMAGOLoss:
    """Deterministic: one critic (no REDQ draw), expected values over a DiscreteCritic (no sampled action), no
    dropout. Each call gets a fresh copy: PopArt's statistics move with every call."""
    tstep, traj, actor, critic, space = _modules(env, encoder)
    return AMAGOLoss(tstep, traj, actor, critic, action_space=space, gammas=[0.9, 0.99], num_critics_td=1,
                     **kw).eval()


def cut_by_hand(td: TensorDict) -> tuple[TensorDict, list[tuple[int, int, int]]]:
    """Each row split where a valid step has root `is_init` (after its first), each piece padded to T by repeating its
    last step with mask False -> ([W, T] windows, [(row, start, end)])."""
    B, T = td.shape
    windows, where = [], []
    for b in range(B):
        starts = [0] + [t for t in range(1, T) if td["is_init"][b, t].item() and td["mask"][b, t].item()]
        for s, e in zip(starts, starts[1:] + [T]):
            piece = td[b, s:e].clone()
            mask = piece["mask"].clone()
            piece = torch.cat([piece, piece[-1:].expand(T - (e - s)).clone()])
            piece["mask"] = torch.cat([mask, torch.zeros(T - (e - s), dtype=torch.bool)])
            windows.append(piece)
            where.append((b, s, e))
    return torch.stack(windows), where


def _per_step_equal(ours: torch.Tensor, ref: torch.Tensor, where, mask) -> None:
    """ours [B, T, ...] at every valid step == ref [W, T, ...] at the same step of its window."""
    for w, (b, s, e) in enumerate(where):
        valid = mask[b, s:e]
        torch.testing.assert_close(ours[b, s:e][valid], ref[w, :e - s][valid], **TOL)


def _check(batch: TensorDict, env, encoder: str) -> None:
    """AMAGOLoss (per step, its mean and the td_error priority) and MemoryEmbedding on `batch` vs on it cut by hand."""
    assert (batch["is_init"][:, 1:, 0] & batch["mask"][:, 1:]).any() and not batch["next", "is_init"].any()
    windows, where = cut_by_hand(batch)
    loss = _loss(env, encoder, reduction="none")
    ours, ref = copy.deepcopy(loss)(batch), copy.deepcopy(loss)(windows)
    for key in ("loss_critic", "loss_actor"):
        _per_step_equal(ours[key], ref[key], where, batch["mask"])
    _per_step_equal(batch["td_error"], windows["td_error"], where, batch["mask"])
    mean = _loss(env, encoder)  # reduction "mean": the same valid steps, whatever rows hold them
    torch.testing.assert_close(copy.deepcopy(mean)(batch.clone())["loss_critic"],
                               copy.deepcopy(mean)(windows.clone())["loss_critic"], **TOL)
    tstep, traj, *_ = _modules(env, encoder)
    embed = MemoryEmbedding(tstep, traj).eval()
    a, r = embed(batch.clone()), embed(windows.clone())
    _per_step_equal(a["state_emb"], r["state_emb"], where, batch["mask"])
    _per_step_equal(a["next", "state_emb"], r["next", "state_emb"], where, batch["mask"])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_rollout_crossing_a_reset_equals_its_trials(encoder):
    """The issue's repro: 4 T-Maze envs, 8 steps, trials of 4 (the goal cue is in o_0 of each trial)."""
    env = make_amago_env(TMaze(4, corridor_length=3, seed=0))
    torch.manual_seed(1)
    data = env.rollout(8, break_when_any_done=False)
    data["mask"] = torch.ones(data.shape, dtype=torch.bool)
    _check(data, env, encoder)


@pytest.mark.parametrize("encoder", ["transformer", "gru", "torchrl_lstm"])
def test_trials_of_other_lengths_slices_and_padding(encoder):
    """Trials of 2 steps, a slice that starts and ends mid-trial, and padded steps after a reset."""
    env = make_amago_env(TMaze(3, corridor_length=1, seed=0))
    torch.manual_seed(2)
    data = env.rollout(11, break_when_any_done=False)[:, 1:10]  # starts mid-trial, 4 trial starts per row
    data["mask"] = torch.ones(data.shape, dtype=torch.bool)
    data["mask"][1, 6:] = False  # padding right after row 1's reset at step 5
    data["mask"][2, 2:] = False  # a row whose only reset is in its padding: not cut
    _check(data, env, encoder)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_collector_batch_equals_its_trials(encoder):
    """A real TorchRL Collector: 7 steps per env and trials of 3, so batches start and end mid-trial; the second
    batch is checked (its rows start inside a trial begun in the first)."""
    env = make_amago_env(TMaze(2, corridor_length=2, seed=0))
    torch.manual_seed(3)
    collector = Collector(env, None, frames_per_batch=14, total_frames=28)
    batches = list(collector)
    collector.shutdown()
    data = batches[1]
    assert data.shape == (2, 7) and not data["is_init"][:, 0].any()
    data["mask"] = torch.ones(data.shape, dtype=torch.bool)
    _check(data.exclude("collector"), env, encoder)


# ---------------------------------------------------------------- TorchRL batches the memory cannot read: refused
def _collector_batch(env, frames: int = 20) -> TensorDict:
    torch.manual_seed(0)
    collector = Collector(env, None, frames_per_batch=frames, total_frames=frames)
    try:
        batch = next(iter(collector)).exclude("collector")
    finally:
        collector.shutdown()
    batch["mask"] = torch.ones(batch.shape, dtype=torch.bool)
    return batch


def test_a_batch_from_torchrls_multistep_is_refused_naming_n_step():
    """TorchRL's MultiStep postproc moves ("next", obs)[t] to o_{t+n}: the memory's T+1 sequence would skip steps
    (MemoryEmbedding's states were off by 0.57, the critic loss 0.877 against 1.004 for n_step=3 on the raw batch)."""
    from torchrl.data.postprocs import MultiStep

    env = make_amago_env(TMaze(2, corridor_length=4, seed=0))
    raw = _collector_batch(env)
    nstep = MultiStep(gamma=0.99, n_steps=3)(raw.clone())
    _loss(env, "gru", n_step=3)(raw.clone())  # the one-step batch is read
    with pytest.raises(ValueError, match=r"MultiStep.*AMAGOLoss\(n_step=n\)"):
        _loss(env, "gru")(nstep)
    tstep, traj, *_ = _modules(env, "gru")
    with pytest.raises(ValueError, match="MemoryEmbedding: the batch comes from TorchRL's MultiStep"):
        MemoryEmbedding(tstep, traj)(nstep)


@pytest.mark.parametrize("scaled", [False, True])
def test_a_reward_transform_on_a_batched_env_of_amago_envs_is_refused_by_the_loss(scaled):
    """A reward transform on a SerialEnv of make_amago_env envs is out of the workers' sight (their check covers
    their own transforms): the critics would learn a reward the memory never sees, so the loss's first batch is
    refused naming make_amago_env; without the transform the same batch is read."""
    from torchrl.envs import RewardScaling, SerialEnv, TransformedEnv

    from torchrl_amago.envs import HiddenDoor

    env = SerialEnv(2, lambda: make_amago_env(HiddenDoor(2, step_penalty=0.3, seed=0)))
    env = TransformedEnv(env, RewardScaling(0.0, 10.0)) if scaled else env
    batch = _collector_batch(env)
    batch = batch.reshape(-1, batch.shape[-1])  # [workers, doors, T] -> [B, T]
    loss = _loss(env, "gru")
    if scaled:
        with pytest.raises(ValueError, match=r"\('next', 'prev_reward'\) is .* make_amago_env"):
            loss(batch)
    else:
        assert torch.isfinite(loss(batch)["loss_critic"])
