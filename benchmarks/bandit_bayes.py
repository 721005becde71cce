"""Bernoulli bandit trials (`envs.BernoulliBandit`) against the exact Bayes-optimal policy (`envs.BanditBelief`):
the classic strategies, or a trained agent. Prints one JSON line per strategy (or per acting mode of the agent).

Without `--run`: each strategy acts in the env, on each arm's successes s and failures f in the trial so far
(uniform Beta(1, 1) priors):
- `bayes`: the exact Bayes-optimal pull (its mean checks the DP in the env);
- `thompson`: the argmax of one Beta(s + 1, f + 1) draw per arm (Thompson sampling);
- `ucb1`: each arm once, then argmax s / n + sqrt(2 ln t / n) (Auer et al. 2002);
- `greedy`: the argmax of the posterior mean (s + 1) / (s + f + 2), ties at random;
- `random`: a uniform arm.

With `--popgym EPISODES`: strategies in POPGym's own envs (`pip install popgym`), for the targets of
`examples/03_popgym.py`: MultiarmedBanditEasy (10 arms, 200 pulls, +-1/200 per pull: BernoulliBandit(n_arms=10,
n_pulls=200) with the return 2 x pays / 200 - 1) with `thompson` and `greedy`; HigherLowerEasy (guess whether the next
card of a 52-card deck is higher, +-1/52, 0 on equal ranks) with `counting` (the Bayes-optimal guess: more cards left
above the shown rank than below; a guess changes nothing later, so it is optimal) and `memoryless` (above the middle
rank or not: the best guess without memory).

With `--run DIR`: loads the weights of a finished `examples/01_basic_gym.py` run on a
`torchrl_amago/BernoulliBandit-k{K}-n{N}-v0` id, or of an `examples/03_popgym.py` run on a POPGym MultiarmedBandit
(no Bayes metrics: too large to solve; `popgym_return` in POPGym's scale), from its `ckpts/<--ckpt>.pt` (read without
unpickling; flags after `--` go to the example and must build the same model as the run's), and acts in its eval
envs, sampling actions and then with the policy's mode (`--actor_gamma I`: with the policy head of another trained discount).

Every line: `return`, `return_se`, `share_of_bayes`, `per_pull` (the mean reward of each pull), `stay_after_win` /
`stay_after_loss` (the share of pulls that repeat the previous arm after it paid / did not), `greedy_agree` (per
pull, the share that pull an arm of the highest posterior mean); with the DP: `regret_per_pull`, the mean of
V*(b_t) - Q*(b_t, a_t) at each pull, where b_t is the posterior before the pull (these add up to the expected gap to
the optimum); `regret_below_best_mean`, the part of it from pulling an arm whose posterior mean is below the best
one; `bayes_agree`, per pull, the share of pulls the Bayes-optimal policy would make too. An agent's lines add:
- `critic_bayes_agree` / `critic_greedy_agree` (per trained discount, the acting one last): the critic's argmax is a
  Bayes-optimal pull / an arm of the highest posterior mean, at pulls where some arm is not; `actor_critic_agree`:
  the policy's most likely arm is the critic's argmax, there;
- `critic_error` / `critic_bias`: mean absolute / signed gap between the critic's Q(b_t, a_t) (acting discount,
  reward units) and Q*(b_t, a_t) (Q* is the optimal policy's: the agent's own Q is lower by its own shortfall);
- `entropy_per_pull`: the acting policy's entropy (nats; a uniform arm is ln K);
- `probe_r2`: a linear probe (ridge, fitted on half of the pulls, scored on the other half) from the state embedding
  to each arm's posterior mean; `probe_r2_inputs`: the same from the step's own inputs (last arm, last reward,
  time), what a memoryless agent holds.

    python benchmarks/bandit_bayes.py                              # 5 and 10 arms, 10 pulls
    python benchmarks/bandit_bayes.py --arms 5 --pulls 20
    python benchmarks/bandit_bayes.py --arms 10 --pulls 200 --no_dp --strategies thompson ucb1 greedy random
    python benchmarks/bandit_bayes.py --popgym 3000
    python benchmarks/bandit_bayes.py --run runs/bandit -- --env torchrl_amago/BernoulliBandit-k5-n10-v0
    python benchmarks/bandit_bayes.py --run runs/popgym_MultiarmedBanditEasy -- --env MultiarmedBanditEasy
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_files import load_example, split_argv, trained_policy  # noqa: E402

STRATEGIES = ("bayes", "thompson", "ucb1", "greedy", "random")


def counts_policy(name: str, n_arms: int, n_pulls: int, generator: torch.Generator):
    """`act(successes [n, k], failures [n, k]) -> arm [n]` of the strategy `name` (module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; one of {list(STRATEGIES)}")

    def noise(s):  # random tie-breaking
        return 1e-9 * torch.rand(s.shape, generator=generator, dtype=torch.float64)

    if name == "bayes":
        from torchrl_amago.envs import BanditBelief

        dp, cache = BanditBelief(n_arms, n_pulls), {}

        def bayes(s, f):
            for key in zip(map(tuple, s.tolist()), map(tuple, f.tolist())):
                if key not in cache:
                    q = torch.tensor(dp.action_values(*key), dtype=torch.float64)
                    cache[key] = int(torch.nonzero(q >= q.max() - 1e-12)[0])
            return torch.tensor([cache[key] for key in zip(map(tuple, s.tolist()), map(tuple, f.tolist()))])
        return bayes
    if name == "thompson":  # Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b)
        def draw(a):
            return torch._standard_gamma(a.double(), generator=generator)
        return lambda s, f: (lambda x, y: (x / (x + y)).argmax(-1))(draw(s + 1), draw(f + 1))
    if name == "ucb1":
        def ucb1(s, f):
            n = (s + f).double()
            t = n.sum(-1, keepdim=True).clamp(min=1)
            score = s / n.clamp(min=1) + torch.sqrt(2 * torch.log(t) / n.clamp(min=1))
            return torch.where(n == 0, torch.inf, score + noise(s)).argmax(-1)
        return ucb1
    if name == "greedy":
        return lambda s, f: ((s + 1.0) / (s + f + 2.0) + noise(s)).argmax(-1)
    return lambda s, f: torch.randint(n_arms, (s.shape[0],), generator=generator)


def play(name: str, n_arms: int, n_pulls: int, trials: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Actions and rewards ``[trials, n_pulls]`` of the strategy `name` in `trials` trials of the env at once."""
    from torchrl_amago.envs import BernoulliBandit

    env = BernoulliBandit(trials, n_arms=n_arms, n_pulls=n_pulls, categorical_action_encoding=True, seed=seed)
    act = counts_policy(name, n_arms, n_pulls, torch.Generator().manual_seed(seed + 1))
    s = torch.zeros(trials, n_arms, dtype=torch.long)
    f = torch.zeros_like(s)
    td, actions, rewards = env.reset(), [], []
    for _ in range(n_pulls):
        td["action"] = a = act(s, f)
        r = env.step(td)["next", "reward"].squeeze(-1)
        hit = torch.nn.functional.one_hot(a, n_arms)
        s, f = s + hit * r.long()[:, None], f + hit * (1 - r.long())[:, None]
        actions.append(a)
        rewards.append(r)
    return {"action": torch.stack(actions, -1), "reward": torch.stack(rewards, -1)}


def counts_before(action: torch.Tensor, reward: torch.Tensor, n_arms: int, n_pulls: int):
    """Successes and failures of each arm before each step ``[N, T, K]`` (trials of `n_pulls` steps from step 0)."""
    hit = torch.nn.functional.one_hot(action, n_arms).float()
    N, T = action.shape
    win = (hit * reward[..., None]).reshape(N, T // n_pulls, n_pulls, n_arms)
    lose = (hit * (1 - reward[..., None])).reshape(N, T // n_pulls, n_pulls, n_arms)
    s, f = win.cumsum(2) - win, lose.cumsum(2) - lose
    return s.reshape(N, T, n_arms).long(), f.reshape(N, T, n_arms).long()


def bayes_q(s: torch.Tensor, f: torch.Tensor, dp) -> torch.Tensor:
    """Q*(b, a) of every arm ``[N, T, K]`` at the beliefs (s, f)."""
    memo: dict = {}
    keys = list(zip(map(tuple, s.reshape(-1, s.shape[-1]).tolist()), map(tuple, f.reshape(-1, f.shape[-1]).tolist())))
    for key in keys:
        if key not in memo:
            memo[key] = dp.action_values(*key)
    return torch.tensor([memo[key] for key in keys], dtype=torch.float64).reshape(s.shape)


def choices(rec: dict, n_arms: int, n_pulls: int, dp=None) -> tuple[dict, dict]:
    """(the metrics every line holds, what `agent_metrics` reuses) of actions and 0/1 rewards ``[N, T]``; without
    `dp` (a `BanditBelief`; too large to solve) no Bayes metrics."""
    a, r = rec["action"], rec["reward"]
    N, T = a.shape
    pull = torch.arange(T) % n_pulls

    def per_pull(x):
        return [round(float(x[:, pull == j].double().mean()), 4) for j in range(n_pulls)]

    returns = r.reshape(N, T // n_pulls, n_pulls).sum(-1).flatten().double()
    later = pull[1:] > 0  # pulls after the first of their trial: the previous pull is the same trial's
    stay, won = (a[:, 1:] == a[:, :-1])[:, later], r[:, :-1][:, later] > 0
    s, f = counts_before(a, r, n_arms, n_pulls)
    mean = (s + 1.0) / (s + f + 2.0)
    best_mean = mean >= mean.max(-1, keepdim=True).values - 1e-9
    below = ~best_mean.gather(-1, a[..., None]).squeeze(-1)
    out = {"trials": int(returns.numel()), "return": round(float(returns.mean()), 4),
           "return_se": round(float(returns.std() / returns.numel() ** 0.5), 4), "per_pull": per_pull(r),
           "stay_after_win": round(float(stay[won].double().mean()), 4),
           "stay_after_loss": round(float(stay[~won].double().mean()), 4), "greedy_agree": per_pull(~below)}
    parts = {"per_pull": per_pull, "mean": mean, "best_mean": best_mean}
    if dp is None:
        return out, parts
    qstar = bayes_q(s, f, dp)
    vstar = qstar.max(-1).values
    q_taken = qstar.gather(-1, a[..., None]).squeeze(-1)
    regret = vstar - q_taken
    bayes_set = qstar >= vstar[..., None] - 1e-9
    best = dp.value(dp.start)
    out.update({"share_of_bayes": round(float(returns.mean()) / best, 4), "bayes_optimal": round(best, 4),
                "bayes_per_pull": [round(x, 4) for x in dp.optimal_returns()],
                "regret": round(float(regret.sum() / returns.numel()), 4), "regret_per_pull": per_pull(regret),
                "regret_below_best_mean": round(float((regret * below).sum() / returns.numel()), 4),
                "bayes_agree": per_pull(bayes_set.gather(-1, a[..., None]).squeeze(-1))})
    return out, {**parts, "bayes_set": bayes_set, "q_taken": q_taken}


def ridge_r2(x: torch.Tensor, y: torch.Tensor, seed: int, lam: float = 1e-2) -> float:
    """R² on a held-out half of a ridge regression of `y` ``[M, K]`` on standardized `x` ``[M, D]``."""
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    tr, te = order[: len(order) // 2], order[len(order) // 2:]
    x, y = x.double(), y.double()
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    xs = torch.cat([(x - mu) / sd, torch.ones(x.shape[0], 1, dtype=x.dtype)], -1)
    w = torch.linalg.solve(xs[tr].T @ xs[tr] + lam * len(tr) * torch.eye(xs.shape[1], dtype=x.dtype), xs[tr].T @ y[tr])
    return float(1 - ((xs[te] @ w - y[te]) ** 2).sum() / ((y[te] - y[tr].mean(0)) ** 2).sum())


def agent_metrics(rec: dict, parts: dict, seed: int) -> dict:
    """The agent's critic, policy and memory against the posterior (module docstring)."""
    a, q, probs = rec["action"], rec["q"], rec["probs"]  # q [N, T, A, G]
    critic_best = q.argmax(-2)  # [N, T, G]
    out = {}
    for name, good in (("greedy", parts["best_mean"]), ("bayes", parts.get("bayes_set"))):
        if good is None:
            continue
        informative = ~good.all(-1)  # pulls where some arm is not in the set
        ok = good.unsqueeze(-1).expand(*good.shape, q.shape[-1]).gather(-2, critic_best.unsqueeze(-2)).squeeze(-2)
        out[f"critic_{name}_agree"] = [round(float(x), 4) for x in ok.double()[informative].mean(0)]
    informative = ~parts.get("bayes_set", parts["best_mean"]).all(-1)
    out["actor_critic_agree"] = round(float((probs.argmax(-1) == critic_best[..., -1]).double()[informative].mean()),
                                      4)
    if "q_taken" in parts:
        taken = q[..., -1].gather(-1, a[..., None]).squeeze(-1).double() - parts["q_taken"]
        out.update(critic_error=round(float(taken.abs().mean()), 4), critic_bias=round(float(taken.mean()), 4))
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1)
    N, T = a.shape
    inputs = torch.cat([rec["prev_action"].float(), rec["prev_reward"].float(), rec["time_idx"].float()], -1)
    mean = parts["mean"].reshape(N * T, -1)
    return {**out, "entropy_per_pull": parts["per_pull"](entropy),
            "probe_r2": round(ridge_r2(rec["emb"].reshape(N * T, -1), mean, seed), 4),
            "probe_r2_inputs": round(ridge_r2(inputs.reshape(N * T, -1), mean, seed), 4)}


def record(trainer, policy, steps: int, actor_gamma: int = -1) -> dict[str, torch.Tensor]:
    """Act in the trainer's eval env for `steps` with the policy head of the trained discount `actor_gamma` (-1: the
    acting one); per step ``[N, T, ...]``: the action, reward, inputs, state embedding, the acting policy's
    probabilities and the critic's Q of every arm (every discount, in reward units: PopArt undone, divided by
    --reward_multiplier)."""
    loss, rows = trainer.loss, {"emb": [], "probs": [], "q": []}

    def head(module, args, out):  # the policy acts with the last discount's slot: put the chosen one there
        return torch.cat([out[..., :-1, :], out[..., actor_gamma, :].unsqueeze(-2)], -2)

    def on_actor(module, args, out):
        emb = args[0].detach().reshape(-1, args[0].shape[-1])
        rows["emb"].append(emb)
        rows["probs"].append(torch.softmax(out.detach().reshape(emb.shape[0], -1, out.shape[-1])[:, -1], -1))
        q = loss._critic(loss.critic_head_params, emb).float().mean(-3).transpose(-1, -2)  # [N, A, G]
        rows["q"].append((loss.popart(q, normalized=False) if loss.use_popart else q) / trainer.cfg.reward_multiplier)

    hooks = [policy.actor_head.register_forward_hook(head), policy.actor_head.register_forward_hook(on_actor)]
    try:
        with torch.no_grad():
            ro = trainer.eval_env.rollout(steps, policy, break_when_any_done=False)
    finally:
        for hook in hooks:
            hook.remove()
    return {"action": ro["action"].argmax(-1), "reward": (ro["next", "reward"].squeeze(-1) > 0).float(),
            "prev_action": ro["prev_action"], "prev_reward": ro["prev_reward"], "time_idx": ro["time_idx"],
            **{k: torch.stack(v, 1) for k, v in rows.items()}}


def popgym_lines(episodes: int, seed: int):
    """Mean episode returns of the `--popgym` strategies in POPGym's envs."""
    import numpy as np
    from popgym.envs.higher_lower import HigherLowerEasy
    from popgym.envs.multiarmed_bandit import MultiarmedBanditEasy

    rng = np.random.default_rng(seed)

    def bandit(strategy, env, obs):  # state: successes, failures; obs: did the last pull pay
        s, f = np.zeros(env.num_bandits), np.zeros(env.num_bandits)
        while True:
            score = rng.beta(s + 1, f + 1) if strategy == "thompson" else (s + 1) / (s + f + 2) + 1e-9 * rng.random(
                s.shape)
            a = int(np.argmax(score))
            obs = yield a
            s[a], f[a] = s[a] + obs, f[a] + 1 - obs

    def cards(strategy, env, obs):  # obs: the rank shown; 0 = guess higher
        left = np.full(13, 4)
        left[obs] -= 1
        while True:
            above, below = (left[obs + 1:].sum(), left[:obs].sum()) if strategy == "counting" else (12 - obs, obs)
            obs = yield 0 if above > below or (above == below and rng.random() < 0.5) else 1
            left[obs] -= 1

    for task, make, play, strategies in (("MultiarmedBanditEasy", MultiarmedBanditEasy, bandit, ("thompson", "greedy")),
                                         ("HigherLowerEasy", HigherLowerEasy, cards, ("counting", "memoryless"))):
        env = make()
        for strategy in strategies:
            returns = []
            for ep in range(episodes):
                obs, _ = env.reset(seed=seed * episodes + ep)
                agent, total, done = play(strategy, env, obs), 0.0, False
                action = next(agent)
                while not done:
                    obs, r, terminated, truncated, _ = env.step(action)
                    total, done = total + r, terminated or truncated
                    action = agent.send(obs) if not done else None
                returns.append(total)
            ret = np.array(returns)
            yield {"popgym": task, "strategy": strategy, "episodes": episodes, "return": round(float(ret.mean()), 4),
                   "return_se": round(float(ret.std() / episodes ** 0.5), 4)}


POPGYM_BANDITS = {"MultiarmedBanditEasy": (10, 200), "MultiarmedBanditMedium": (20, 400),
                  "MultiarmedBanditHard": (30, 600)}


def agent_task(passed: list[str]) -> tuple[str, int, int]:
    """(example, arms, pulls) of the example's `--env`: `torchrl_amago/BernoulliBandit-k{K}-n{N}-v0` (example 01) or
    a POPGym MultiarmedBandit (example 03)."""
    env = passed[passed.index("--env") + 1] if "--env" in passed[:-1] else ""
    if env in POPGYM_BANDITS:
        return ("03_popgym", *POPGYM_BANDITS[env])
    m = re.fullmatch(r"torchrl_amago/BernoulliBandit-k(\d+)-n(\d+)-v0", env)
    if m is None:
        raise ValueError(f"bandit_bayes: pass --env torchrl_amago/BernoulliBandit-k<K>-n<N>-v0 or one of "
                         f"{list(POPGYM_BANDITS)} after --, got {env!r}")
    return "01_basic_gym", int(m.group(1)), int(m.group(2))


def agent_lines(args, passed: list[str]):
    """The trained agent's lines: sampled actions, then the policy's mode."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from torchrl_amago.envs import BanditBelief

    example, n_arms, n_pulls = agent_task(passed)
    dp = BanditBelief(n_arms, n_pulls) if example == "01_basic_gym" else None  # POPGym's are too large to solve
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = trained_policy(load_example(example), args, passed, tmp)
        for greedy in (False, True):
            policy = trainer.policy.fresh_copy().eval()
            policy.deterministic = None
            trainer.eval_env.set_seed(args.seed)
            torch.manual_seed(args.seed)
            with set_exploration_type(ExplorationType.DETERMINISTIC if greedy else ExplorationType.RANDOM):
                rec = record(trainer, policy, args.trials_per_env * n_pulls, args.actor_gamma)
            out, parts = choices(rec, n_arms, n_pulls, dp)
            if dp is None:  # POPGym's return: +-1/pulls per pull
                out["popgym_return"] = round(2 * out["return"] / n_pulls - 1, 4)
            yield {"run": args.run, "ckpt": args.ckpt, "greedy": greedy, "actor_gamma": args.actor_gamma,
                   "arms": n_arms, "pulls": n_pulls, **out,
                   **agent_metrics(rec, parts, args.seed), "uniform_entropy": round(math.log(n_arms), 4)}
        trainer.close()


def main(argv=None):
    own, passed = split_argv(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", type=int, nargs="+", default=[5, 10], help="strategies: arm counts, each with --pulls")
    ap.add_argument("--pulls", type=int, nargs="+", default=[10], help="strategies: pulls per trial")
    ap.add_argument("--trials", type=int, default=20000, help="strategies: trials per strategy")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--no_dp", action="store_true", help="strategies: skip the Bayes DP (too many pulls to solve); "
                                                          "prints returns only, without the bayes strategy")
    ap.add_argument("--popgym", type=int, metavar="EPISODES", help="strategies in POPGym's envs, this many episodes")
    ap.add_argument("--run", help="a run folder of examples/01_basic_gym.py on a BernoulliBandit id or of "
                                  "examples/03_popgym.py on a MultiarmedBandit")
    ap.add_argument("--ckpt", default="latest", choices=("latest", "best"))
    ap.add_argument("--eval_envs", type=int, default=200, help="agent: eval envs stepped together")
    ap.add_argument("--trials_per_env", type=int, default=10, help="agent: trials per eval env")
    ap.add_argument("--actor_gamma", type=int, default=-1, help="agent: act with the policy head of this trained "
                                                                "discount (an index, the auxiliary ones first; -1: "
                                                                "the acting --gamma)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the envs and of the sampled actions")
    args = ap.parse_args(own)
    if args.popgym:
        for line in popgym_lines(args.popgym, args.seed):
            print(json.dumps(line), flush=True)
        return
    if args.run:
        for line in agent_lines(args, passed):
            print(json.dumps(line), flush=True)
        return
    from torchrl_amago.envs import BanditBelief

    for k in args.arms:
        for h in args.pulls:
            dp = None if args.no_dp else BanditBelief(k, h)
            for name in [n for n in args.strategies if dp is not None or n != "bayes"]:
                out, _ = choices(play(name, k, h, args.trials, args.seed), k, h, dp)
                print(json.dumps({"arms": k, "pulls": h, "strategy": name, **out}), flush=True)


if __name__ == "__main__":
    main()
