"""HiddenDoor: specs, dynamics by hand, the Bayes-optimal value per attempt (closed form vs exact belief DP vs
enumeration in the env), scripted optimal / forgetful policies in the env, and the adaptation report on it."""
from functools import lru_cache

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from torchrl_amago.envs import HiddenDoor, hidden_door_optimal_returns, hidden_door_optimal_success, make_amago_env
from torchrl_amago.trainers.metrics import adaptation_report


def step(env, actions):
    a = torch.tensor(actions)
    if not env.categorical_action_encoding:
        a = torch.nn.functional.one_hot(a, env.n_actions)
    td = TensorDict({"action": a.reshape(tuple(env.batch_size) + tuple(a.shape[1:]))}, env.batch_size)
    return env.step(td)["next"]


@pytest.mark.parametrize("reveal", [False, True])
@pytest.mark.parametrize("n", [None, 1, 64])
def test_specs(reveal, n):
    check_env_specs(HiddenDoor(n, reveal=reveal, seed=0))
    check_env_specs(make_amago_env(HiddenDoor(n, reveal=reveal, seed=0, categorical_action_encoding=True)))
    check_env_specs(make_amago_env(HiddenDoor(n, k_attempts=1, seed=0), k_episodes=3, reset_mode="dummy_step"))


def test_bad_arguments_are_named():
    for kw in (dict(n_doors=1), dict(k_attempts=0), dict(picks_per_attempt=0), dict(goal_reward=0.0),
               dict(step_penalty=-1.0)):
        with pytest.raises(ValueError, match=next(iter(kw))):
            HiddenDoor(2, **kw)


def test_dynamics_by_hand_reward_only():
    env = HiddenDoor(2, n_doors=4, k_attempts=2, picks_per_attempt=2, step_penalty=0.25)
    td = env.reset(task={"goal": torch.tensor([2, 0])})
    assert td["observation"].tolist() == [[1, 0, 0], [1, 0, 0]]
    n1 = step(env, [1, 0])  # env 0: wrong door; env 1: the goal at once (ends attempt 0)
    assert n1["reward"].squeeze(-1).tolist() == [-0.25, 1.0]
    assert n1["observation"].tolist() == [[0, 0.5, 0], [1, 0, 0.5]]
    assert n1["episode_end"].squeeze(-1).tolist() == [False, True]
    assert n1["episode_success"].squeeze(-1).tolist() == [False, True]
    assert n1["episode_return"].squeeze(-1).tolist() == [0.0, 1.0]
    assert n1["episode_count"].squeeze(-1).tolist() == [0, 1]
    n2 = step(env, [3, 0])  # env 0: wrong again, attempt 0 fails; env 1: goal again, trial over
    assert n2["reward"].squeeze(-1).tolist() == [-0.25, 1.0]
    assert n2["episode_end"].all() and n2["episode_success"].squeeze(-1).tolist() == [False, True]
    assert n2["episode_return"].squeeze(-1).tolist() == [-0.5, 1.0]
    assert n2["terminated"].squeeze(-1).tolist() == [False, True] and not n2["truncated"].any()
    assert n2["observation"][0].tolist() == [1, 0, 0.5]
    n3 = step(env, [2, 0])  # env 0: the goal in attempt 1, trial over
    assert n3["reward"][0].item() == 1.0 and n3["terminated"][0].item() and n3["episode_count"][0].item() == 2
    assert env.get_task()["goal"].tolist() == [2, 0]


def test_reveal_shows_the_belief_across_attempts():
    env = HiddenDoor(None, n_doors=3, k_attempts=3, picks_per_attempt=1, reveal=True, categorical_action_encoding=True)
    env.reset(task={"goal": torch.tensor(2)})
    n1 = step(env, [0])  # wrong: attempt 0 fails (one pick)
    assert n1["observation"].tolist() == pytest.approx([1, 0, 1 / 3, 1, 0, 0, 0, 0, 0])
    n2 = step(env, [2])  # the goal in attempt 1
    assert n2["observation"].tolist() == pytest.approx([1, 0, 2 / 3, 1, 0, 0, 0, 0, 1])
    assert n2["reward"].item() == 1.0
    soft = env.reset(TensorDict({"_reset": torch.ones(1, dtype=torch.bool)}, []), soft_reset=True)
    assert soft["observation"].tolist() == [1, 0, 0] + [0] * 6 and env.goal.item() == 2  # same goal, fresh trial


def test_reward_is_never_negative_zero():
    env = HiddenDoor(1, n_doors=3)
    env.reset(task={"goal": torch.tensor([0])})
    r = step(env, [1])["reward"]
    assert r.item() == 0.0 and not torch.signbit(r).any()


# ---------------------------------------------------------------- the Bayes-optimal value
def belief_dp(N, K, m, c, G, target):
    """max over all policies of E[return of attempt `target`] (0-based; None: of the whole trial), by exact DP
    over the belief (number of doors not ruled out, goal known?) — independent of the closed form."""

    @lru_cache(maxsize=None)
    def V(u, known, att, p):
        if att >= K:
            return 0.0
        count = 1.0 if target is None or target == att else 0.0

        def after_wrong(u2, kn):  # a wrong pick: -c, one more pick used
            p2 = p + 1
            return -c * count + (V(u2, kn, att + 1, 0) if p2 >= m else V(u2, kn, att, p2))

        opts = []
        if known:
            opts.append(G * count + V(u, True, att + 1, 0))  # pick the goal
            opts.append(after_wrong(u, True))  # pick a ruled-out door
        else:
            hit = 1.0 / u  # pick a door not ruled out: the goal is uniform among the u left
            miss = 0.0 if u == 1 else after_wrong(u - 1, False)
            opts.append(hit * (G * count + V(u, True, att + 1, 0)) + (1 - hit) * miss)
            if u < N:
                opts.append(after_wrong(u, False))  # pick a door already ruled out
        return max(opts)

    return V(N, False, 0, 0)


@pytest.mark.parametrize("N,K,m,c,G", [(5, 3, 2, 0.0, 1.0), (4, 3, 1, 0.0, 1.0), (6, 3, 2, 0.1, 1.0),
                                       (5, 4, 5, 0.2, 1.0), (3, 2, 4, 0.5, 2.0), (6, 4, 3, 0.05, 1.0)])
def test_closed_form_matches_belief_dp(N, K, m, c, G):
    opt = hidden_door_optimal_returns(N, K, m, c, G)
    dp = [belief_dp(N, K, m, c, G, j) for j in range(K)]
    assert opt == pytest.approx(dp, abs=1e-12)
    # one policy reaches every attempt's optimum at once: the best total is their sum
    assert belief_dp(N, K, m, c, G, None) == pytest.approx(sum(opt), abs=1e-12)


def test_default_values_and_known_special_cases():
    assert hidden_door_optimal_returns() == pytest.approx([0.4, 0.8, 1.0])
    assert hidden_door_optimal_success() == pytest.approx([0.4, 0.8, 1.0])
    assert HiddenDoor(1).optimal_returns() == pytest.approx([0.4, 0.8, 1.0]) and HiddenDoor(1).max_trial_steps == 6
    assert hidden_door_optimal_returns(6, 4, 1) == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6])  # j / N
    # search until found: attempt 1 pays G - c (N - 1) / 2, every later attempt G
    assert hidden_door_optimal_returns(5, 3, 5, 0.2) == pytest.approx([0.6, 1.0, 1.0])


# ---------------------------------------------------------------- scripted policies in the env
class Scripted:
    """The Bayes-optimal policy from the agent's own history (prev_action / prev_reward: what a reward-only agent
    sees): pick the goal once it paid, else a door not ruled out (the lowest index, or with `random_order` in a
    random order drawn per trial). `forget=True` forgets everything at each attempt start (remembers only within an
    attempt)."""

    def __init__(self, n, N, forget=False, random_order=True, seed=0):
        self.N, self.forget, self.random_order = N, forget, random_order
        self.g = torch.Generator().manual_seed(seed)
        self.wrong = torch.zeros(n, N, dtype=torch.bool)
        self.goal = torch.full((n,), -1)
        self.order = torch.zeros(n, N)

    def __call__(self, td):
        init = td["is_init"].view(-1)
        pa, pr = td["prev_action"], td["prev_reward"].view(-1)
        picked = pa.sum(-1) > 0
        idx = pa.argmax(-1)
        self.wrong[init] = False
        self.goal[init] = -1
        if self.random_order:
            self.order[init] = torch.rand(int(init.sum()), self.N, generator=self.g)
        hit, miss = picked & (pr > 0) & ~init, picked & (pr <= 0) & ~init
        self.goal = torch.where(hit, idx, self.goal)
        self.wrong[miss, idx[miss]] = True
        if self.forget:
            start = td["observation"][:, 0] == 1
            self.wrong[start] = False
            self.goal[start] = -1
        free = torch.where(self.wrong, -1.0, self.order).argmax(-1)  # a door not ruled out (ties: the lowest)
        act = torch.where(self.goal >= 0, self.goal, free)
        return td.set("action", torch.nn.functional.one_hot(act, self.N))


def belief_policy(td):
    """Memoryless: acts on the observation of HiddenDoor(reveal=True) alone (tried doors, found goal)."""
    obs = td["observation"]
    N = (obs.shape[-1] - 3) // 2
    tried, found = obs[:, 3:3 + N] > 0, obs[:, 3 + N:] > 0
    act = torch.where(found.any(-1), found.float().argmax(-1), (~tried).float().argmax(-1))
    return td.set("action", torch.nn.functional.one_hot(act, N))


def first_trial_attempts(ro, K):
    """Per-env attempt returns of each row's first trial, [N, K] (read straight from the rollout)."""
    done = ro["next", "done"][..., 0].long()
    first = (done.cumsum(1) - done) == 0
    end = ro["next", "episode_end"][..., 0] & first
    out = torch.full((ro.batch_size[0], K), float("nan"), dtype=torch.float64)
    rows = torch.arange(ro.batch_size[0]).unsqueeze(1).expand_as(end)[end]
    out[rows, ro["next", "episode_count"][..., 0][end] - 1] = ro["next", "episode_return"][..., 0][end].double()
    assert (done.sum(1) >= 1).all() and not out.isnan().any()
    return out


@pytest.mark.parametrize("N,K,m,c", [(5, 3, 2, 0.0), (4, 4, 1, 0.0), (6, 3, 3, 0.1), (5, 2, 5, 0.2)])
def test_enumeration_over_goals_in_the_env_gives_the_closed_form(N, K, m, c):
    # one env per goal, searched in the fixed order 0, 1, ...: the goal's rank in the search is uniform on 1..N, so
    # the mean over the N envs is the exact expectation
    env = make_amago_env(HiddenDoor(N, n_doors=N, k_attempts=K, picks_per_attempt=m, step_penalty=c, seed=0))
    td = env.reset(task={"goal": torch.arange(N)})
    ro = env.rollout(K * m, Scripted(N, N, random_order=False), auto_reset=False, tensordict=td,
                     break_when_any_done=False)
    got = first_trial_attempts(ro, K)
    assert got.mean(0).tolist() == pytest.approx(hidden_door_optimal_returns(N, K, m, c), abs=1e-6)

    env = make_amago_env(HiddenDoor(N, n_doors=N, k_attempts=K, picks_per_attempt=m, step_penalty=c, reveal=True))
    td = env.reset(task={"goal": torch.arange(N)})
    ro = env.rollout(K * m, belief_policy, auto_reset=False, tensordict=td, break_when_any_done=False)
    assert first_trial_attempts(ro, K).mean(0).tolist() == pytest.approx(
        hidden_door_optimal_returns(N, K, m, c), abs=1e-6)


def mc_check(means, sds, n, target):
    se = sds / n ** 0.5
    return ((means - torch.tensor(target, dtype=torch.float64)).abs() <= 4 * se + 1e-9).all()


@pytest.mark.parametrize("reveal", [False, True])
def test_scripted_optimal_policy_reaches_the_optimum_and_forgetting_does_not(reveal):
    n = 2048
    env = make_amago_env(HiddenDoor(n, reveal=reveal, seed=3))
    opt = env.base_env.optimal_returns()
    policy = belief_policy if reveal else Scripted(n, 5, seed=4)
    ro = env.rollout(6 * 5, policy, break_when_any_done=False)
    rep = adaptation_report(ro, max_trial_steps=env.base_env.max_trial_steps)
    trials = rep["eval/episode_0_trials"]
    assert trials >= 3 * n  # complete trials from the 30-step window, ~2 per 6 steps of each row
    means = torch.tensor([rep[f"eval/episode_{k}_return"] for k in range(3)], dtype=torch.float64)
    sds = (means * (1 - means)).clamp_min(1e-12).sqrt()  # returns are 0/1 here
    assert mc_check(means, sds, trials, opt), (means, opt)
    assert [rep[f"eval/episode_{k}_success"] for k in range(3)] == [rep[f"eval/episode_{k}_return"]
                                                                    for k in range(3)]
    gain = opt[-1] - opt[0]
    assert rep["eval/adaptation_gain_return_ci_low"] <= gain <= rep["eval/adaptation_gain_return_ci_high"]

    forgetful = make_amago_env(HiddenDoor(n, seed=5))
    ro = forgetful.rollout(30, Scripted(n, 5, forget=True, seed=6), break_when_any_done=False)
    rep_f = adaptation_report(ro, max_trial_steps=6)
    f_means = torch.tensor([rep_f[f"eval/episode_{k}_return"] for k in range(3)], dtype=torch.float64)
    nf = rep_f["eval/episode_0_trials"]
    # a policy that ignores earlier attempts plays every attempt like the first ...
    assert mc_check(f_means, (f_means * (1 - f_means)).sqrt(), nf, [opt[0]] * 3)
    # ... so it does worse than the optimum on attempts >= 2, by far more than the Monte-Carlo error
    for k in (1, 2):
        assert f_means[k] + 8 * (0.25 / nf) ** 0.5 < opt[k]
    assert rep_f["eval/adaptation_gain_return_ci_high"] < rep["eval/adaptation_gain_return_ci_low"]


def test_uniformly_random_policy_value():
    n = 4096
    env = HiddenDoor(n, seed=7)
    torch.manual_seed(8)  # the random actions (a generator apart from the env's, or they would copy its goals)
    ro = env.rollout(30, break_when_any_done=False)  # the env's random action spec: uniform picks
    rep = adaptation_report(ro, max_trial_steps=6)
    means = torch.tensor([rep[f"eval/episode_{k}_return"] for k in range(3)], dtype=torch.float64)
    rnd = 1 - (4 / 5) ** 2  # 0.36: no memory, repeats allowed
    assert mc_check(means, (means * (1 - means)).sqrt(), rep["eval/episode_0_trials"], [rnd] * 3)


def test_meta_trial_wrapped_single_attempt_env_gives_the_same_optimum():
    """HiddenDoor(k_attempts=1) under MetaTrial(k_episodes=3): MetaTrial's soft resets keep the goal, its
    bookkeeping keys feed the report, and the optimal policy reaches 0.4 / 0.8 / 1.0 again."""
    n = 2048
    env = make_amago_env(HiddenDoor(n, k_attempts=1, seed=8), k_episodes=3, same_task=True)
    ro = env.rollout(30, Scripted(n, 5, seed=9), break_when_any_done=False)
    rep = adaptation_report(ro, max_trial_steps=6)
    means = torch.tensor([rep[f"eval/episode_{k}_return"] for k in range(3)], dtype=torch.float64)
    trials = rep["eval/episode_0_trials"]
    assert trials >= 3 * n
    assert mc_check(means, (means * (1 - means)).clamp_min(1e-12).sqrt(), trials, [0.4, 0.8, 1.0]), means
    assert rep["eval/adaptation_trials"] == trials
    # the inner env's success of each attempt survives MetaTrial's soft reset on the same step
    success = torch.tensor([rep[f"eval/episode_{k}_success"] for k in range(3)], dtype=torch.float64)
    torch.testing.assert_close(success, means)


def test_steps_thousands_of_envs_fast():
    import time

    env = HiddenDoor(4096, reveal=True, seed=0, categorical_action_encoding=True)
    env.reset()
    td = TensorDict({"action": torch.randint(5, (4096,))}, [4096])
    t0 = time.perf_counter()
    for _ in range(50):
        env.step(td)
    assert (time.perf_counter() - t0) / 50 < 0.05  # per batched step of 4,096 envs (~1 ms here)
