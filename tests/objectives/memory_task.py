"""A tiny memory task for the learning test: a 2-arm bandit whose good arm is shown only at t=0.

Episode of K+1 steps. Obs (4-d): [good_arm==0, good_arm==1] at t=0 only, [1] in slot 2 at the choice step
t=K, slot 3 = 1 on the intermediate steps. Only the action at t=K matters: reward 1 if it is the good arm,
then `terminated`. A memory-free policy is at chance (50%) at t=K; one with memory gets 100%.

Data are collected with `AMAGOPolicy` in a plain batched loop (no TorchRL env), and stored as full-episode
`[N, K+1]` windows in the loss's key layout (root + "next").
"""
from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type

OBS_DIM, NUM_ARMS = 4, 2


def _obs(arm: torch.Tensor, t: int, K: int) -> torch.Tensor:
    o = torch.zeros(arm.shape[0], OBS_DIM)
    if t == 0:
        o[torch.arange(arm.shape[0]), arm] = 1.0
    elif t == K:
        o[:, 2] = 1.0
    elif t < K:
        o[:, 3] = 1.0
    return o  # t = K + 1 (terminal successor): zeros


def collect(policy, n: int, K: int, generator: torch.Generator, deterministic: bool = False,
            epsilon: float = 0.0) -> TensorDict:
    """Run n episodes in parallel; return a [n, K+1] TensorDict (root + next keys) and the success rate."""
    arm = torch.randint(0, NUM_ARMS, (n,), generator=generator)
    prev_a = torch.zeros(n, NUM_ARMS)
    prev_r = torch.zeros(n, 1)
    steps = []
    policy.reset_state()
    itype = InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM
    for t in range(K + 1):
        td = TensorDict({"observation": _obs(arm, t, K), "prev_action": prev_a, "prev_reward": prev_r,
                         "time_idx": torch.full((n, 1), t, dtype=torch.long),
                         "is_init": torch.full((n, 1), t == 0, dtype=torch.bool)}, [n])
        with set_interaction_type(itype):
            a = policy(td.clone())["action"].long().reshape(n)
        if epsilon > 0:
            rnd = torch.rand(n, generator=generator) < epsilon
            a = torch.where(rnd, torch.randint(0, NUM_ARMS, (n,), generator=generator), a)
        r = ((a == arm) & (t == K)).float().unsqueeze(-1)
        td["action"] = a
        prev_a = torch.nn.functional.one_hot(a, NUM_ARMS).float()
        prev_r = r
        nxt = TensorDict({"observation": _obs(arm, t + 1, K), "prev_action": prev_a, "prev_reward": prev_r,
                          "time_idx": torch.full((n, 1), t + 1, dtype=torch.long),
                          "is_init": torch.zeros(n, 1, dtype=torch.bool), "reward": r,
                          "terminated": torch.full((n, 1), t == K, dtype=torch.bool),
                          "truncated": torch.zeros(n, 1, dtype=torch.bool),
                          "done": torch.full((n, 1), t == K, dtype=torch.bool)}, [n])
        td["next"] = nxt
        steps.append(td)
    data = torch.stack(steps, dim=1)
    data["mask"] = torch.ones(n, K + 1, dtype=torch.bool)
    return data, data["next", "reward"][:, -1].mean().item()
