"""A tiny memory task for the learning test: a 2-arm bandit whose good arm is shown only at t=0.

Episode of K+1 steps. Obs (4-d): [good_arm==0, good_arm==1] at t=0 only, [1] in slot 2 at the choice step
t=K, slot 3 = 1 on the intermediate steps. Only the action at t=K matters: reward 1 if it is the good arm,
then `terminated`. A memory-free policy is at chance (50%) at t=K; one with memory gets 100%.

`continuous=True` is the same task for a 1-d continuous action in [-1, 1]: a cue x ~ U(-0.8, 0.8) is shown at
t=0 (obs slot 0) and the reward at t=K is 1 - |a - x|. The best memory-free action (a = 0) scores 0.6 on average;
recalling x scores 1.

Data are collected with `AMAGOPolicy` in a plain batched loop (no TorchRL env), and stored as full-episode
`[N, K+1]` windows in the loss's key layout (root + "next"). Whatever the policy writes under "next" (a TorchRL
recurrent module's state) becomes the next step's root input, as TorchRL's `step_mdp` does (it is not stored:
the loss starts each window from a fresh state).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torchrl.objectives import SoftUpdate

OBS_DIM, NUM_ARMS = 4, 2


def _obs(cue: torch.Tensor, t: int, K: int, continuous: bool = False) -> torch.Tensor:
    o = torch.zeros(cue.shape[0], OBS_DIM)
    if t == 0:
        if continuous:
            o[:, 0] = cue
        else:
            o[torch.arange(cue.shape[0]), cue] = 1.0
    elif t == K:
        o[:, 2] = 1.0
    elif t < K:
        o[:, 3] = 1.0
    return o  # t = K + 1 (terminal successor): zeros


def collect(policy, n: int, K: int, generator: torch.Generator, deterministic: bool = False,
            epsilon: float = 0.0, continuous: bool = False) -> TensorDict:
    """Run n episodes in parallel; return a [n, K+1] TensorDict (root + next keys) and the mean final reward.
    Exploration: discrete -> epsilon random arms; continuous -> N(0, epsilon) action noise (clipped)."""
    if continuous:
        cue = torch.rand(n, generator=generator) * 1.6 - 0.8
        prev_a = torch.zeros(n, 1)
    else:
        cue = torch.randint(0, NUM_ARMS, (n,), generator=generator)
        prev_a = torch.zeros(n, NUM_ARMS)
    prev_r = torch.zeros(n, 1)
    carry = None  # the policy's "next" outputs (TorchRL recurrent state), fed back at the next step
    steps = []
    policy.reset_state()
    itype = InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM
    for t in range(K + 1):
        td = TensorDict({"observation": _obs(cue, t, K, continuous), "prev_action": prev_a, "prev_reward": prev_r,
                         "time_idx": torch.full((n, 1), t, dtype=torch.long),
                         "is_init": torch.full((n, 1), t == 0, dtype=torch.bool)}, [n])
        inp = td.clone() if carry is None else td.clone().update(carry)  # stored data holds no memory state
        with set_interaction_type(itype):
            out = policy(inp)
        a = out["action"]
        carry = out.get("next", None)
        if continuous:
            a = a.reshape(n, 1)
            if epsilon > 0:
                a = (a + epsilon * torch.randn(n, 1, generator=generator)).clamp(-1.0, 1.0)
            r = ((1.0 - (a[:, 0] - cue).abs()) * (t == K)).unsqueeze(-1)
            prev_a = a
        else:
            a = a.long().reshape(n)
            if epsilon > 0:
                rnd = torch.rand(n, generator=generator) < epsilon
                a = torch.where(rnd, torch.randint(0, NUM_ARMS, (n,), generator=generator), a)
            r = ((a == cue) & (t == K)).float().unsqueeze(-1)
            prev_a = torch.nn.functional.one_hot(a, NUM_ARMS).float()
        td["action"] = a
        prev_r = r
        nxt = TensorDict({"observation": _obs(cue, t + 1, K, continuous), "prev_action": prev_a,
                          "prev_reward": prev_r, "time_idx": torch.full((n, 1), t + 1, dtype=torch.long),
                          "is_init": torch.zeros(n, 1, dtype=torch.bool), "reward": r,
                          "terminated": torch.full((n, 1), t == K, dtype=torch.bool),
                          "truncated": torch.zeros(n, 1, dtype=torch.bool),
                          "done": torch.full((n, 1), t == K, dtype=torch.bool)}, [n])
        td["next"] = nxt
        steps.append(td)
    data = torch.stack(steps, dim=1)
    data["mask"] = torch.ones(n, K + 1, dtype=torch.bool)
    return data, data["next", "reward"][:, -1].mean().item()


def train(loss, policy, K: int, updates: int, generator: torch.Generator, batch: int = 32, envs_per_round: int = 32,
          updates_per_round: int = 8, autocast_dtype: Optional[torch.dtype] = None, continuous: bool = False,
          after_update: Optional[Callable[[int], None]] = None) -> None:
    """Alternate collection (policy sampling + 20% random actions, or N(0, 0.2) noise when `continuous`; the last
    100 rounds kept) and updates of `loss` (AdamW 1e-3, clip 1.0, SoftUpdate tau 0.01), `updates` in all.
    `after_update(n)` is called after the n-th update (e.g. to evaluate)."""
    updater = SoftUpdate(loss, tau=0.01)
    opt = torch.optim.AdamW(loss.parameters(), lr=1e-3, weight_decay=1e-3)
    buffer, done = [], 0
    while done < updates:
        data, _ = collect(policy, envs_per_round, K, generator, epsilon=0.2, continuous=continuous)
        buffer = (buffer + [data])[-100:]
        pool = torch.cat(buffer, 0)
        for _ in range(updates_per_round):
            with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                out = loss(pool[torch.randint(0, pool.shape[0], (batch,), generator=generator)])
            opt.zero_grad()
            (out["loss_actor"] + out["loss_critic"]).backward()
            torch.nn.utils.clip_grad_norm_(loss.parameters(), 1.0)
            opt.step()
            updater.step()
            done += 1
            if after_update is not None:
                after_update(done)
