"""Reference learner: how fast a plain transition-level TD3 learns HalfCheetah-v4 on this machine.

Not an AMAGO component: a yardstick for the continuous-control examples (docs/domains/half_cheetah_vel.md). It
answers "how many updates should a working off-policy learner need here?" and, with ``--amago_actor``, whether
AMAGO's actor-side choices (tanh-Gaussian policy trained by DPG through ``rsample`` with no entropy term, REDQ
min-of-2-drawn-with-replacement targets without target-policy smoothing, the original's exploration noise
``clip(a + U[0,1) * eps * N(0, 1))`` with eps annealed, leaky-ReLU, AdamW 1e-3) still learn without a sequence
model. Both variants keep TD3's delayed (every 2nd update) actor and target updates. Needs
``pip install "gymnasium[mujoco]"``. One JSON line per evaluation (one deterministic 1000-step episode)::

    {"env_steps": 30000, "updates": 25000, "eval_return": -12.7, "wall_s": 317}

    python benchmarks/reference_td3_halfcheetah.py                 # TD3: 5k uniform-random steps, then 1 update/step
    python benchmarks/reference_td3_halfcheetah.py --amago_actor   # AMAGO's actor-side choices, same critic sizes
"""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from torchrl_amago import require
from torchrl_amago.modules.common import MLP
from torchrl_amago.modules.distributions import TanhGaussianOutput


def soft_update(net, target, tau):
    with torch.no_grad():
        for p, pt in zip(net.parameters(), target.parameters()):
            pt.lerp_(p, tau)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="HalfCheetah-v4")
    p.add_argument("--steps", type=int, default=30_000, help="env steps (updates start after --random_steps)")
    p.add_argument("--random_steps", type=int, default=5_000)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--num_critics", type=int, default=2)
    p.add_argument("--eval_every", type=int, default=5_000)
    p.add_argument("--eps_steps_anneal", type=int, default=20_000, help="--amago_actor exploration anneal")
    p.add_argument("--amago_actor", action="store_true", help="AMAGO's actor-side choices (see the docstring)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    require("mujoco", '"gymnasium[mujoco]"', "benchmarks/reference_td3_halfcheetah.py")
    import gymnasium as gym

    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    torch.set_num_threads(1)
    env, eval_env = gym.make(a.env), gym.make(a.env)
    O, A = env.observation_space.shape[0], env.action_space.shape[0]
    act = "leaky_relu" if a.amago_actor else "relu"
    dist = TanhGaussianOutput()
    P = 2 * A if a.amago_actor else A
    actor, actor_t = MLP(O, a.hidden, 2, P, act=act), MLP(O, a.hidden, 2, P, act=act)
    critics = nn.ModuleList(MLP(O + A, a.hidden, 2, 1, act=act) for _ in range(a.num_critics))
    critics_t = nn.ModuleList(MLP(O + A, a.hidden, 2, 1, act=act) for _ in range(a.num_critics))
    actor_t.load_state_dict(actor.state_dict())
    critics_t.load_state_dict(critics.state_dict())
    wd = 1e-3 if a.amago_actor else 0.0
    opt_a = torch.optim.AdamW(actor.parameters(), 3e-4, weight_decay=wd)
    opt_c = torch.optim.AdamW(critics.parameters(), 3e-4, weight_decay=wd)

    def policy(net, obs, sample):
        out = net(obs)
        if not a.amago_actor:
            return torch.tanh(out)
        d = dist(out)
        return d.rsample() if sample else d.mean

    def act(o):
        """The online actor's deterministic action for one numpy observation."""
        with torch.no_grad():
            return policy(actor, torch.as_tensor(o, dtype=torch.float32)[None], False)[0].numpy()

    def q_all(nets, obs, action):
        return torch.stack([c(torch.cat([obs, action], -1)) for c in nets])  # [C, B, 1]

    def evaluate():
        o, _ = eval_env.reset(seed=a.seed + 10_000)
        ret, done = 0.0, False
        while not done:
            o, r, term, trunc, _ = eval_env.step(act(o))
            ret, done = ret + r, term or trunc
        return ret

    N, B = a.steps, a.batch_size
    updates = 0

    def update(bo, ba, br, bo2, bd):
        """One critic step; every 2nd call also an actor step and the target updates (TD3's delay)."""
        nonlocal updates
        with torch.no_grad():
            a2 = policy(actor_t, bo2, True)
            if not a.amago_actor:  # TD3's target-policy smoothing
                a2 = (a2 + (0.2 * torch.randn_like(a2)).clamp(-0.5, 0.5)).clamp(-1, 1)
            q2 = q_all(critics_t, bo2, a2)
            if a.amago_actor:  # REDQ: min of 2 members drawn with replacement, per sample
                pick, rows = torch.randint(0, a.num_critics, (2, B)), torch.arange(B)
                q2 = torch.minimum(q2[pick[0], rows], q2[pick[1], rows])
            else:
                q2 = q2.amin(0)
            y = br + 0.99 * (1 - bd) * q2
        loss_c = (q_all(critics, bo, ba) - y).square().mean()
        opt_c.zero_grad()
        loss_c.backward()
        opt_c.step()
        updates += 1
        if updates % 2:
            return
        critics.requires_grad_(False)
        q_pi = q_all(critics, bo, policy(actor, bo, True))
        loss_a = -(q_pi.amin(0) if a.amago_actor else q_pi[0]).mean()
        critics.requires_grad_(True)
        opt_a.zero_grad()
        loss_a.backward()
        opt_a.step()
        soft_update(actor, actor_t, 0.005)
        soft_update(critics, critics_t, 0.005)

    buf = {k: np.zeros((N, d), np.float32) for k, d in (("o", O), ("a", A), ("r", 1), ("o2", O), ("d", 1))}
    o, _ = env.reset(seed=a.seed)
    mult, t0 = rng.random(), time.time()
    for t in range(N):
        if t < a.random_steps:
            x = rng.uniform(-1, 1, A).astype(np.float32)
        else:
            x = act(o)
            if a.amago_actor:
                eps = max(1.0 - 0.95 * (t - a.random_steps) / a.eps_steps_anneal, 0.05)
                x = np.clip(x + mult * eps * rng.standard_normal(A), -1, 1)
            else:
                x = np.clip(x + 0.1 * rng.standard_normal(A), -1, 1)
        o2, r, term, trunc, _ = env.step(x)
        for k, v in (("o", o), ("a", x), ("r", r), ("o2", o2), ("d", float(term))):
            buf[k][t] = v
        o = o2
        if term or trunc:
            o, _ = env.reset()
            mult = rng.random()
        if t >= a.random_steps:
            idx = rng.integers(0, t + 1, B)
            update(*(torch.as_tensor(buf[k][idx]) for k in ("o", "a", "r", "o2", "d")))
        if (t + 1) % a.eval_every == 0:
            print(json.dumps({"env_steps": t + 1, "updates": updates, "eval_return": round(evaluate(), 1),
                              "wall_s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
