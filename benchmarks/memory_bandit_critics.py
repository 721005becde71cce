"""Updates to success on the memory bandit (issue 13, item 5): which part of AMAGO-2's multi-task agent is slow.

The task and training loop are the learning test's (`tests/objectives/memory_task.py`, K = 6, Transformer d 32,
batch 32, 8 updates per 32 collected episodes, AdamW 1e-3); the deterministic success rate on 400 fresh episodes
is measured every `--every` updates. One JSON line per (variant, seed):
{"variant": ..., "seed": ..., "first_095": updates to the first eval >= 0.95 (null: never), "final": ...,
 "curve": [[updates, success], ...], "wall_s": ...}

Variants (all: 7 gammas, 4 critics, reward_multiplier 10, critic_loss_weight 10):
  scalar        DiscreteCritic (Q per action from the state), DPG + filtered BC (the default agent)
  scalar_bc     the same critic, filtered BC only with 3 sampled actions (the multi-task agent's actor loss)
  input_bc      ContinuousCritic on the one-hot action (action as critic input, PopArt MSE), BC only, 3 samples
  input         the same with the DPG term
  twohot        AMAGOLoss.multi_task: TwoHotCritic (action input, 32 bins in [-10, 10], symlog), BC only
  twohot_dpg / twohot_64 / twohot_wide (128 bins, +-1e5) / twohot_nosymlog / twohot_hl_gauss / twohot_zero_init
  / twohot_k8 (8 sampled actions for the value): one change each from `twohot`

    python benchmarks/memory_bandit_critics.py --variants scalar input_bc twohot --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.objectives.memory_task import NUM_ARMS, OBS_DIM, collect, train  # noqa: E402
from torchrl_amago.modules.heads import ActorHead, ContinuousCritic, DiscreteCritic  # noqa: E402
from torchrl_amago.modules.policy import AMAGOPolicy  # noqa: E402
from torchrl_amago.modules.timestep import MLPTimestepEncoder  # noqa: E402
from torchrl_amago.modules.trajectory import make_trajectory_encoder  # noqa: E402
from torchrl_amago.objectives import AMAGOLoss  # noqa: E402
from torchrl_amago.spaces import ActionSpace  # noqa: E402

GAMMAS = [0.1, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999]
BC_ONLY = dict(online_coeff=0.0, offline_coeff=1.0, num_actions_for_value_in_actor_loss=3)
TWO_HOT = dict(num_bins=32, min_return=-10.0, max_return=10.0)
VARIANTS = {  # critic kind, critic kwargs, loss kwargs
    "scalar": ("per_action", {}, {}),
    "scalar_bc": ("per_action", {}, BC_ONLY),
    "input": ("action_input", {}, {}),
    "input_bc": ("action_input", {}, BC_ONLY),
    "twohot": ("two_hot", {}, {}),
    "twohot_dpg": ("two_hot", {}, dict(online_coeff=1.0)),
    "twohot_64": ("two_hot", dict(num_bins=64), {}),
    "twohot_wide": ("two_hot", dict(num_bins=128, min_return=-1e5, max_return=1e5), {}),
    "twohot_nosymlog": ("two_hot", dict(use_symlog=False), {}),
    "twohot_hl_gauss": ("two_hot", dict(label_type="hl_gauss"), {}),
    "twohot_zero_init": ("two_hot", dict(zero_init_output=True), {}),
    "twohot_k8": ("two_hot", {}, dict(num_actions_for_value_in_actor_loss=8)),
}


def build_loss(variant: str, d: int, K: int):
    kind, critic_kw, loss_kw = VARIANTS[variant]
    asp = ActionSpace("discrete", NUM_ARMS)
    te = MLPTimestepEncoder({"observation": (OBS_DIM,)}, asp.dim, d_hidden=d, d_output=d, hide_rl2s=True)
    tr = make_trajectory_encoder("transformer", d, K + 1, d_model=d, n_layers=1, n_heads=2, dropout_ff=0.0,
                                 dropout_emb=0.0)
    actor = ActorHead(d, asp, len(GAMMAS), d_hidden=d)
    if kind == "two_hot":
        return AMAGOLoss.multi_task(te, tr, actor, action_space=asp, gammas=GAMMAS,
                                    critic_kwargs={**TWO_HOT, "d_hidden": d, **critic_kw}, **loss_kw), asp
    if kind == "action_input":
        critic = ContinuousCritic(d, NUM_ARMS, GAMMAS, 4, d_hidden=d, **critic_kw)
    else:
        critic = DiscreteCritic(d, NUM_ARMS, len(GAMMAS), 4, d_hidden=d, **critic_kw)
    return AMAGOLoss(te, tr, actor, critic, action_space=asp, gammas=GAMMAS, **loss_kw), asp


def run(variant: str, seed: int, updates: int, every: int, K: int = 6, d: int = 32, batch: int = 32) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loss, asp = build_loss(variant, d, K)
    policy = AMAGOPolicy(loss.timestep_encoder, loss.trajectory_encoder, loss.actor_head, asp)
    curve, t0 = [], time.time()

    def evaluate(done: int) -> None:
        if done % every == 0:
            _, success = collect(policy, 400, K, torch.Generator().manual_seed(seed + 1000), deterministic=True)
            curve.append([done, round(float(success), 3)])

    train(loss, policy, K, updates, gen, batch, after_update=evaluate)
    first = next((u for u, s in curve if s >= 0.95), None)
    return dict(variant=variant, seed=seed, first_095=first, final=curve[-1][1] if curve else None, curve=curve,
                wall_s=round(time.time() - t0, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["scalar", "scalar_bc", "input_bc", "twohot"],
                    choices=sorted(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--updates", type=int, default=1600)
    ap.add_argument("--every", type=int, default=80, help="updates between evals")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="No target network updater")
    for seed in args.seeds:
        for variant in args.variants:
            print(json.dumps(run(variant, seed, args.updates, args.every)), flush=True)


if __name__ == "__main__":
    main()
