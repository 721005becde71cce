"""Our Transformer memory trained by TorchRL's own losses on the passive T-Maze (docs/swapping.md, "Our memory in
your TorchRL algorithm"): a stock TorchRL pipeline (Collector, SoftUpdate and `--loss`: `dqn` = DQNLoss with
QValueModule and EGreedyModule; `sac` = DiscreteSACLoss with a ProbabilisticActor, fixed alpha) whose only
torchrl_amago pieces are the env, the timestep encoder, the Transformer as a TorchRL recurrent module (acting state
in TensorDict entries, primer on the env), the sequence replay and MemoryEmbedding (values and TD targets from one
pass over the window's T+1 observations).

    python benchmarks/torchrl_dqn_tmaze.py --horizon 10 --csv docs/results/torchrl_dqn_tmaze10.csv
    python benchmarks/torchrl_dqn_tmaze.py --loss sac --frames 30000 --csv docs/results/torchrl_sac_tmaze10.csv

With `sac` the critic trains the memory and the actor reads it detached (`sac_objective`): DiscreteSACLoss's actor
term minimises -Q(state_emb), and its gradient through a shared memory drags every embedding toward where the
critic is highest (measured: the junction's Q values became those of the first step, the same for both goal
sides, and the greedy policy kept moving right there). Alpha is fixed at `--alpha` 0.02: a step's penalty is
1/(horizon+1) here, and an entropy bonus of alpha * log(4) above it keeps the policy near uniform, so that it never
reaches the junction (learned from 1.0, alpha was still 0.06 after 30k frames).

Every `--eval_every` collector batches it prints one JSON line (updates, frames, epsilon for `dqn`, greedy success
rate on `--eval_envs` fresh trials: the share that ends on the goal side; a memory-free agent gets 0.5) and appends
it to `--csv`; the last line is the summary (final success, first update at >= `--solved`, seconds).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import EGreedyModule, OneHotCategorical, ProbabilisticActor, QValueModule
from torchrl.modules.utils import get_primers_from_module
from torchrl.objectives import DiscreteSACLoss, DQNLoss, SoftUpdate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without installing

from torchrl_amago.data import make_sequence_replay  # noqa: E402
from torchrl_amago.envs import TMaze, make_amago_env  # noqa: E402
from torchrl_amago.modules import MLPTimestepEncoder, TrajectoryEncoderModule, make_trajectory_encoder  # noqa: E402
from torchrl_amago.objectives import MemoryEmbedding  # noqa: E402


def make_env(n: int, horizon: int, seed: int):
    return make_amago_env(TMaze(n, corridor_length=horizon, passive=True, penalty=-1.0 / (horizon + 1), seed=seed))


def _mlp(d_model: int, n_actions: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_model, d_model), nn.LeakyReLU(), nn.Linear(d_model, n_actions))


def dqn_parts(spec, d_model: int, eps_frames: int):
    """DQNLoss on a Q head that reads "state_emb" (greedy actions by QValueModule) and epsilon-greedy exploration.
    Returns (acting head, exploration module, loss, objective(td) -> scalar)."""
    head = TensorDictSequential(TensorDictModule(_mlp(d_model, spec.shape[-1]), ["state_emb"], ["action_value"]),
                                QValueModule(spec=spec))
    explore = EGreedyModule(spec, eps_init=1.0, eps_end=0.05, annealing_num_steps=eps_frames)
    loss = DQNLoss(head, action_space=spec, delay_value=True)
    return head, explore, loss, lambda td: loss(td)["loss"]


def sac_parts(spec, d_model: int, alpha: float):
    """DiscreteSACLoss (two critics, alpha fixed at `alpha`) on an actor ("state_emb" -> "logits" -> one-hot
    "action") and a Q network ("state_emb" -> "action_value"). Returns (actor, None, loss, objective(td) -> scalar)."""
    n = spec.shape[-1]
    actor = ProbabilisticActor(TensorDictModule(_mlp(d_model, n), ["state_emb"], ["logits"]), in_keys=["logits"],
                               out_keys=["action"], spec=spec, distribution_class=OneHotCategorical)
    qvalue = TensorDictModule(_mlp(d_model, n), ["state_emb"], ["action_value"])
    loss = DiscreteSACLoss(actor, qvalue, action_space=spec, num_actions=n, fixed_alpha=True, alpha_init=alpha)
    return actor, None, loss, lambda td: sac_objective(loss, td)


def sac_objective(loss: DiscreteSACLoss, td, key="state_emb"):
    """DiscreteSACLoss's critic term plus its actor term on a copy of `td` whose `key` (the memory's output, written
    by MemoryEmbedding) is detached: the critic trains the memory, the actor only its own head (as SAC-AE / DrQ
    detach a shared encoder from the actor). Keys in: those of `loss.qvalue_loss` / `loss.actor_loss`."""
    loss_q, _ = loss.qvalue_loss(td)
    loss_pi, _ = loss.actor_loss(td.clone(False).set(key, td.get(key).detach()))
    return loss_q + loss_pi


LOSSES = ("dqn", "sac")


def success_rate(env, policy, trial_len: int) -> float:
    """Greedy acting on one fresh trial per env: the share of trials that end with the goal reward."""
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        data = env.rollout(trial_len, policy, break_when_any_done=False)
    return float((data["next", "reward"][:, -1] > 0.5).float().mean())


def train(horizon: int = 10, seed: int = 0, frames: int = 60_000, envs: int = 16, updates_per_batch: int = 16,
          batch_size: int = 32, d_model: int = 32, lr: float = 1e-3, gamma: float = 0.99, eps_frames: int = 20_000,
          eval_every: int = 10, eval_envs: int = 64, solved: float = 0.95, csv_path: str | None = None,
          stop_when_solved: bool = False, quiet: bool = False, loss: str = "dqn", alpha: float = 0.02) -> dict:
    """Train with `loss` ("dqn" or "sac"; `eps_frames` is DQN's, `alpha` SAC's) and evaluate (see the module
    docstring); `stop_when_solved` ends the run at the first evaluation at >= `solved`. Returns the summary."""
    if loss not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}, got {loss!r}")
    loss_name = loss
    torch.manual_seed(seed)
    trial_len = horizon + 1
    env, eval_env = make_env(envs, horizon, seed), make_env(eval_envs, horizon, seed + 1000)
    spec = env.action_spec_unbatched
    tstep = MLPTimestepEncoder.from_specs(env.observation_spec, env.action_spec, d_hidden=d_model, d_output=d_model,
                                          normalize_inputs=False)
    traj = make_trajectory_encoder("transformer", d_model, max_seq_len=trial_len, d_model=d_model, n_layers=2,
                                   n_heads=2, dropout_ff=0.0, dropout_emb=0.0)
    memory = TrajectoryEncoderModule(traj)  # step mode in the collector, sequence mode inside MemoryEmbedding
    if loss_name == "dqn":
        head, explore, loss, objective = dqn_parts(spec, d_model, eps_frames)
    else:
        head, explore, loss, objective = sac_parts(spec, d_model, alpha)
    policy = TensorDictSequential(tstep, memory, head)
    for e in (env, eval_env):
        e.append_transform(get_primers_from_module(policy))  # "recurrent_state_k", "_v", "_length"

    embed = MemoryEmbedding(tstep, traj)
    loss.make_value_estimator(gamma=gamma)
    loss.loss_mask_key = "mask"  # our replay's padding mask
    target = SoftUpdate(loss, tau=0.01)
    params = [p for p in [*embed.parameters(), *loss.parameters()] if p.requires_grad]
    optim = torch.optim.Adam(params, lr=lr)
    replay = make_sequence_replay(frames, seq_len=trial_len, batch_size=batch_size)
    state_keys = [*memory.state_keys, *(("next", k) for k in memory.state_keys)]

    fpb = envs * trial_len
    actor = policy if explore is None else TensorDictSequential(policy, explore)
    collector = Collector(env, actor, frames_per_batch=fpb, total_frames=frames)
    rows, updates, start, first_solved, rate = [], 0, time.time(), None, 0.0
    policy.eval()
    for i, data in enumerate(collector):
        replay.extend(data.exclude(*state_keys))  # the acting state is not training data
        if explore is not None:
            explore.step(data.numel())
        embed.train()
        for _ in range(updates_per_batch if replay.num_trials() >= batch_size else 0):
            value = objective(embed(replay.sample()))
            optim.zero_grad()
            value.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            target.step()
            updates += 1
        policy.eval()
        if (i + 1) % eval_every == 0:
            rate = success_rate(eval_env, policy, trial_len)
            if first_solved is None and rate >= solved:
                first_solved = updates
            row = {"updates": updates, "frames": (i + 1) * fpb,
                   **({} if explore is None else {"epsilon": round(float(explore.eps), 4)}),
                   "success": round(rate, 4), "seconds": round(time.time() - start, 1)}
            rows.append(row)
            if not quiet:
                print(json.dumps(row), flush=True)
            if stop_when_solved and first_solved is not None:
                break
    collector.shutdown()
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return {"loss": loss_name, "horizon": horizon, "seed": seed, "final_success": round(rate, 4),
            "first_solved_update": first_solved, "updates": updates, "seconds": round(time.time() - start, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loss", choices=LOSSES, default="dqn", help="TorchRL loss: DQNLoss or DiscreteSACLoss")
    ap.add_argument("--alpha", type=float, default=0.02, help="DiscreteSACLoss's fixed entropy weight (--loss sac)")
    ap.add_argument("--horizon", type=int, default=10, help="T-Maze corridor length (trials of horizon + 1 steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=60_000, help="env steps collected in all")
    ap.add_argument("--eval_every", type=int, default=10, help="collector batches between evaluations")
    ap.add_argument("--solved", type=float, default=0.95, help="success rate that counts as solved")
    ap.add_argument("--csv", default=None, help="write the evaluation curve here")
    ap.add_argument("--num_threads", type=int, default=1, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        summary = train(args.horizon, args.seed, args.frames, eval_every=args.eval_every, solved=args.solved,
                        csv_path=args.csv, loss=args.loss, alpha=args.alpha)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
