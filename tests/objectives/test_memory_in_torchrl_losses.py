"""Our Transformer memory inside TorchRL's own DQNLoss and DiscreteSACLoss through MemoryEmbedding: on a tiny
batch the values and TD targets equal a hand-built reference in which the encoder sees the whole window, o_0
included (one sequence-mode pass over o_0..o_T; Q at positions 0..T-1, targets at 1..T); padded steps are left
out; the encoders get gradients. The premise: running the memory inside the loss the plain TorchRL way (on the
roots and on td["next"] separately) gives different targets, because the "next" pass never sees o_0."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torch.nn import functional as F
from torchrl.modules import OneHotCategorical, ProbabilisticActor, QValueModule
from torchrl.objectives import DiscreteSACLoss, DQNLoss

from tests.examples.test_examples_smoke import load_module
from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.modules import MLPTimestepEncoder, TrajectoryEncoderModule, make_trajectory_encoder
from torchrl_amago.objectives import MemoryEmbedding

ROOT = Path(__file__).resolve().parents[2]

B, T, D, A, GAMMA = 3, 5, 16, 4, 0.9
pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")
TSTEP_KEYS = ("observation", "prev_action", "prev_reward")


def _setup(seed=0):
    torch.manual_seed(seed)
    env = make_amago_env(TMaze(B, corridor_length=T - 1, seed=seed))  # trials of T steps: o_0 holds the goal side
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=D, d_output=D)
    traj = make_trajectory_encoder("transformer", D, max_seq_len=8, d_model=D, n_layers=1, n_heads=2)
    with torch.no_grad():  # a random policy's window [B, T]: one whole trial per row (crossing rows:
        # tests/objectives/test_trial_crossing.py)
        batch = env.rollout(T, break_when_any_done=False)
    batch = batch[:, :T].clone()
    batch["mask"] = torch.ones(B, T, dtype=torch.bool)
    batch["mask"][1, 3:] = False  # row 1 is padded after 3 steps: garbage there must not count
    batch["next", "reward"][1, 3:] = 1e3
    tstep.eval(), traj.eval()     # deterministic passes (no dropout / statistic updates); gradients still flow
    return env, tstep, traj, batch


def _reference_embeddings(tstep, traj, batch):
    """By hand: the T+1 observations o_0..o_T (roots[:, 0] then "next"), one causal pass."""
    seq = TensorDict({key: torch.cat([batch[key][:, :1], batch["next", key]], 1) for key in (*TSTEP_KEYS, "time_idx")},
                     [B, T + 1])
    valid = torch.cat([batch["mask"][:, :1], batch["mask"]], 1)
    seq = seq.apply(lambda x: torch.where(valid.reshape(*valid.shape, *[1] * (x.ndim - 2)), x, torch.zeros_like(x)))
    return traj(tstep(seq)["tstep_emb"], seq["time_idx"][..., 0])  # [B, T+1, D]


def _chosen(q, action):
    return (q * action.float()).sum(-1)


def test_dqn_loss_values_and_targets_equal_the_whole_window_reference():
    env, tstep, traj, batch = _setup()
    qnet = nn.Sequential(nn.Linear(D, D), nn.Tanh(), nn.Linear(D, A))
    value_net = TensorDictSequential(TensorDictModule(qnet, ["state_emb"], ["action_value"]),
                                     QValueModule(spec=env.action_spec_unbatched))
    loss = DQNLoss(value_net, action_space=env.action_spec_unbatched, delay_value=True, loss_function="l2")
    loss.make_value_estimator(gamma=GAMMA)
    loss.loss_mask_key = "mask"
    embed = MemoryEmbedding(tstep, traj)

    td = embed(batch.clone())
    out = loss(td)
    emb = _reference_embeddings(tstep, traj, batch)
    with torch.no_grad():  # the target network starts as a copy of the online one
        q_ref = _chosen(qnet(emb[:, :-1]), batch["action"])
        not_term = 1.0 - batch["next", "terminated"][..., 0].float()
        target_ref = batch["next", "reward"][..., 0] + GAMMA * not_term * qnet(emb[:, 1:]).amax(-1)
        torch.testing.assert_close(td["state_emb"], emb[:, :-1], atol=1e-5, rtol=0)
        torch.testing.assert_close(td["next", "state_emb"], emb[:, 1:], atol=1e-5, rtol=0)
        valid = batch["mask"]
        err = (q_ref - target_ref) ** 2
        torch.testing.assert_close(td["td_error"][..., 0][valid], err[valid], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["loss"], err[valid].mean(), atol=1e-6, rtol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in traj.layers[0].ff1.parameters())

    # the premise: the plain TorchRL way (memory inside the value network, run on td and on td["next"]) differs
    naive_net = TensorDictSequential(tstep, TrajectoryEncoderModule(traj), value_net)
    naive = DQNLoss(naive_net, action_space=env.action_spec_unbatched, delay_value=True, loss_function="l2")
    naive.make_value_estimator(gamma=GAMMA)
    naive.loss_mask_key = "mask"
    with torch.no_grad():
        naive_td = batch.clone()
        naive(naive_td)
    gap = (naive_td["td_error"][..., 0] - td["td_error"][..., 0])[batch["mask"]].abs().max()
    assert gap > 1e-3, gap


def _sac(seed=1):
    """A DiscreteSACLoss on actor / critic heads that read "state_emb", and its critic and actor losses built by
    hand from one pass over o_0..o_T (critic at positions 0..T-1, soft targets at 1..T)."""
    env, tstep, traj, batch = _setup(seed=seed)
    logits = TensorDictModule(nn.Sequential(nn.Linear(D, D), nn.Tanh(), nn.Linear(D, A)), ["state_emb"], ["logits"])
    actor = ProbabilisticActor(logits, in_keys=["logits"], out_keys=["action"], spec=env.action_spec_unbatched,
                               distribution_class=OneHotCategorical)
    qnet = nn.Sequential(nn.Linear(D, D), nn.Tanh(), nn.Linear(D, A))
    qvalue = TensorDictModule(qnet, ["state_emb"], ["action_value"])
    loss = DiscreteSACLoss(actor, qvalue, action_space=env.action_spec_unbatched, num_actions=A, num_qvalue_nets=2,
                           loss_function="l2")
    loss.make_value_estimator(gamma=GAMMA)
    loss.loss_mask_key = "mask"
    embed = MemoryEmbedding(tstep, traj)

    emb = _reference_embeddings(tstep, traj, batch)
    valid = batch["mask"]
    alpha = loss.log_alpha.exp().detach()

    def q_all(params, s):  # [2, B, T, A]: both critics of the ensemble
        return torch.stack([torch.func.functional_call(qnet, dict(params[j].flatten_keys(".").items()), (s,))
                            for j in range(2)])

    with torch.no_grad():
        pi_next = F.softmax(actor.module[0](TensorDict({"state_emb": emb[:, 1:]}, [B, T]))["logits"], -1)
        q_next = q_all(loss.target_qvalue_network_params["module"], emb[:, 1:]).amin(0)
        v_next = (pi_next * (q_next - alpha * pi_next.clamp_min(1e-8).log())).sum(-1)
        not_term = 1.0 - batch["next", "terminated"][..., 0].float()
        target = batch["next", "reward"][..., 0] + GAMMA * not_term * v_next
        q_sa = _chosen(q_all(loss.qvalue_network_params["module"], emb[:, :-1]), batch["action"])  # [2, B, T]
        qloss_ref = ((q_sa - target) ** 2).sum(0)[valid].mean()
        pi = F.softmax(actor.module[0](TensorDict({"state_emb": emb[:, :-1]}, [B, T]))["logits"], -1)
        q_min = q_all(loss.qvalue_network_params["module"], emb[:, :-1]).amin(0)
        actor_ref = (pi * (alpha * pi.log() - q_min)).sum(-1)[valid].mean()
    return tstep, traj, batch, actor, loss, embed, qloss_ref, actor_ref


def test_discrete_sac_loss_values_and_targets_equal_the_whole_window_reference():
    tstep, traj, batch, actor, loss, embed, qloss_ref, actor_ref = _sac()
    out = loss(embed(batch.clone()))
    torch.testing.assert_close(out["loss_qvalue"], qloss_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["loss_actor"], actor_ref, atol=1e-5, rtol=1e-5)
    (out["loss_qvalue"] + out["loss_actor"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tstep.parameters() if p.requires_grad)


def test_sac_objective_trains_the_memory_with_the_critic_only():
    """benchmarks/torchrl_dqn_tmaze.py --loss sac: `sac_objective` = DiscreteSACLoss's critic loss + its actor loss
    on a detached "state_emb". Its value is the hand-built critic + actor loss; the memory's gradient is exactly the
    critic loss's (the actor's -Q term, which the plain forward sends into the memory, is cut); the actor head still
    learns."""
    tstep, traj, batch, actor, loss, embed, qloss_ref, actor_ref = _sac()
    script = load_module(ROOT / "benchmarks" / "torchrl_dqn_tmaze.py", "torchrl_dqn_tmaze")
    memory = [p for p in [*tstep.parameters(), *traj.parameters()] if p.requires_grad]
    head = list(actor.parameters())
    td = embed(batch.clone())
    value = script.sac_objective(loss, td)
    torch.testing.assert_close(value, qloss_ref + actor_ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(value, memory + head, allow_unused=True)
    critic_only = torch.autograd.grad(loss.qvalue_loss(embed(batch.clone()))[0], memory)
    for got, want in zip(grads[:len(memory)], critic_only):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[len(memory):])

    # the premise: the plain forward's actor loss sends the -Q term's gradient into the memory
    plain = torch.autograd.grad(loss(embed(batch.clone()))["loss_actor"], memory, allow_unused=True)
    assert max(float(g.abs().max()) for g in plain if g is not None) > 1e-4


def test_memory_embedding_errors_name_the_fix():
    env, tstep, traj, batch = _setup()
    embed = MemoryEmbedding(tstep, traj)
    with pytest.raises(KeyError, match="'mask'"):
        embed(batch.exclude("mask"))
    with pytest.raises(ValueError, match=r"\[B, T\] window"):
        embed(batch.reshape(-1))
    assert embed.in_keys[0] == "mask" and embed.out_keys == ["state_emb", ("next", "state_emb")]
