"""BernoulliBandit: specs, dynamics by hand, the task prior; the exact Bayes-optimal value (hand values, every
deterministic policy enumerated on tiny trials, a Monte Carlo run of the DP policy in the env); the gymnasium ids."""
import itertools
import math
from fractions import Fraction

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from torchrl_amago.envs import BanditBelief, BernoulliBandit, bandit_optimal_returns, check_amago_env, make_amago_env
from torchrl_amago.envs.libs import make_gym_envs


def step(env, actions):
    a = torch.tensor(actions)
    if not env.categorical_action_encoding:
        a = torch.nn.functional.one_hot(a, env.n_actions)
    return env.step(TensorDict({"action": a.reshape(*env.batch_size, *a.shape[1:])}, env.batch_size))["next"]


@pytest.mark.parametrize("n", [None, 1, 16])
def test_specs(n):
    check_env_specs(BernoulliBandit(n, seed=0))
    check_env_specs(make_amago_env(BernoulliBandit(n, n_arms=3, n_pulls=4, pulls_per_attempt=2, seed=0,
                                                   categorical_action_encoding=True)))


def test_bad_arguments_are_named():
    for kw, name in ((dict(n_arms=1), "n_arms"), (dict(n_pulls=0), "n_pulls"),
                     (dict(n_pulls=5, pulls_per_attempt=2), "pulls_per_attempt")):
        with pytest.raises(ValueError, match=name):
            BernoulliBandit(2, **kw)
    with pytest.raises(ValueError, match="n_arms"):
        BanditBelief(1, 3)
    with pytest.raises(ValueError, match="pairs"):
        BanditBelief(2, 2).action_values([1, 0], [0, 1])  # 2 pulls made: none left


def test_dynamics_by_hand():
    env = BernoulliBandit(2, n_arms=3, n_pulls=4, pulls_per_attempt=2)
    td = env.reset(task={"probs": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])})
    assert td["observation"].tolist() == [[0.0], [0.0]]
    n1 = step(env, [0, 0])  # env 0: the sure arm; env 1: a dead arm
    assert n1["reward"].squeeze(-1).tolist() == [1.0, 0.0] and n1["observation"].tolist() == [[0.25], [0.25]]
    assert not n1["episode_end"].any() and n1["episode_count"].squeeze(-1).tolist() == [0, 0]
    n2 = step(env, [0, 2])  # the first attempt (2 pulls) ends: returns 2 and 1
    assert n2["episode_end"].all() and n2["episode_return"].squeeze(-1).tolist() == [2.0, 1.0]
    assert n2["episode_success"].all() and n2["episode_count"].squeeze(-1).tolist() == [1, 1]
    step(env, [1, 1])
    n4 = step(env, [1, 1])  # second attempt: nothing paid, the trial is over
    assert n4["episode_return"].squeeze(-1).tolist() == [0.0, 0.0] and not n4["episode_success"].any()
    assert n4["terminated"].all() and n4["done"].all() and not n4["truncated"].any()
    assert env.get_task()["probs"].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    soft = env.reset(TensorDict({"_reset": torch.tensor([True, False])}, [2]), soft_reset=True)
    assert soft["observation"][0].item() == 0.0 and env.probs[0].tolist() == [1.0, 0.0, 0.0]  # same arms


def test_each_trial_draws_uniform_probabilities():
    env = BernoulliBandit(20000, n_arms=2, seed=0)
    env.reset()
    p = env.probs.flatten()
    for q in (0.1, 0.25, 0.5, 0.9):  # the uniform CDF; 4 standard errors at 40,000 draws is 0.01
        assert (p < q).float().mean().item() == pytest.approx(q, abs=0.01)
    first = env.probs.clone()
    env.reset()
    assert not torch.equal(first, env.probs)  # a hard reset redraws
    r = step(env, [0] * 20000)["reward"].squeeze(-1)
    assert r.mean().item() == pytest.approx(env.probs[:, 0].mean().item(), abs=0.015)


# ---------------------------------------------------------------- the Bayes-optimal value
def marginal(s: int, f: int) -> Fraction:
    """P(a given sequence of s successes and f failures of one arm) under p ~ U[0, 1]: s! f! / (s + f + 1)!."""
    return Fraction(math.factorial(s) * math.factorial(f), math.factorial(s + f + 1))


def best_over_all_policies(k: int, h: int) -> Fraction:
    """max over every deterministic policy (an arm for each history) of E[trial return], each policy scored by
    summing over its reward sequences with their joint probabilities — no posterior, no DP."""
    histories = [()]  # reward histories a policy acts on, in breadth-first order
    for d in range(1, h):
        histories += list(itertools.product((0, 1), repeat=d))
    best = Fraction(-1)
    for arms in itertools.product(range(k), repeat=len(histories)):
        policy, total = dict(zip(histories, arms)), Fraction(0)
        for rewards in itertools.product((0, 1), repeat=h):
            s, f = [0] * k, [0] * k
            for t, r in enumerate(rewards):
                a = policy[rewards[:t]]
                s[a], f[a] = s[a] + r, f[a] + 1 - r
            prob = math.prod(marginal(s[i], f[i]) for i in range(k))
            total += prob * sum(rewards)
        best = max(best, total)
    return best


@pytest.mark.parametrize("k,h", [(2, 2), (2, 3), (3, 3), (4, 2)])
def test_dp_equals_the_best_of_every_policy(k, h):
    dp = BanditBelief(k, h)
    assert dp.value(dp.start) == pytest.approx(float(best_over_all_policies(k, h)), abs=1e-12)


def test_hand_values():
    # one pull: the prior mean; two pulls: stay after a success (2/3), switch after a failure (1/2)
    assert bandit_optimal_returns(4, 1) == pytest.approx([0.5])
    assert bandit_optimal_returns(2, 2) == pytest.approx([0.5, 7 / 12])
    for k, h in ((2, 6), (5, 10), (10, 10)):
        dp = BanditBelief(k, h)
        per_pull = dp.optimal_returns()
        assert sum(per_pull) == pytest.approx(dp.value(dp.start), abs=1e-12)  # the policy's pulls add up
        assert all(b >= a - 1e-12 for a, b in zip(per_pull, per_pull[1:]))  # each pull knows more
        assert per_pull[-1] <= k / (k + 1)  # below E[max_i p_i], the reward of knowing the best arm
    # 5 arms, 10 pulls (RL² Table 1's smallest setting): 6.660; at 10 arms 6.714 (the exact DP, this file's check)
    assert sum(bandit_optimal_returns(5, 10)) == pytest.approx(6.660, abs=5e-4)
    assert sum(bandit_optimal_returns(10, 10)) == pytest.approx(6.714, abs=5e-4)


def test_action_values_stay_on_a_winner_and_leave_a_loser():
    dp = BanditBelief(3, 8)
    start = dp.action_values([0, 0, 0], [0, 0, 0])
    assert start == pytest.approx([dp.value(dp.start)] * 3)
    won = dp.action_values([1, 0, 0], [0, 0, 0])
    assert won[0] > won[1] == pytest.approx(won[2])
    lost = dp.action_values([0, 0, 0], [1, 0, 0])
    assert lost[0] < lost[1] == pytest.approx(lost[2])


def test_the_dp_policy_in_the_env_earns_the_dp_value():
    k, h, n = 3, 6, 6000
    dp = BanditBelief(k, h)
    env = BernoulliBandit(n, n_arms=k, n_pulls=h, categorical_action_encoding=True, seed=0)
    td = env.reset()
    s, f, total = torch.zeros(n, k, dtype=torch.long), torch.zeros(n, k, dtype=torch.long), torch.zeros(n)
    choice = {}
    for _ in range(h):
        acts = []
        for si, fi in zip(s.tolist(), f.tolist()):
            key = (tuple(si), tuple(fi))
            if key not in choice:
                q = dp.action_values(si, fi)
                choice[key] = q.index(max(q))
            acts.append(choice[key])
        td["action"] = torch.tensor(acts)
        r = env.step(td)["next", "reward"].squeeze(-1)
        hit = torch.nn.functional.one_hot(td["action"], k)
        s, f, total = s + hit * r.long()[:, None], f + hit * (1 - r.long())[:, None], total + r
    se = total.std().item() / n ** 0.5
    assert abs(total.mean().item() - dp.value(dp.start)) < 4 * se
    assert total.mean().item() > h / 2 + 10 * se  # far above a random arm's h / 2


def test_optimal_returns_per_attempt_sum_the_pulls():
    env = BernoulliBandit(1, n_arms=3, n_pulls=6, pulls_per_attempt=3)
    per_pull = bandit_optimal_returns(3, 6)
    assert env.optimal_returns() == pytest.approx([sum(per_pull[:3]), sum(per_pull[3:])])
    assert env.k_attempts == 2 and env.max_trial_steps == 6


# ---------------------------------------------------------------- the gymnasium ids
def test_gym_id_plays_one_trial_per_episode():
    env = gym.make("torchrl_amago/BernoulliBandit-k5-n10-v0")
    obs, _ = env.reset(seed=3)
    assert env.action_space == gym.spaces.Discrete(5) and obs.tolist() == [0.0]
    for t in range(10):
        obs, r, terminated, truncated, _ = env.step(t % 5)
        assert r in (0.0, 1.0) and obs.tolist() == pytest.approx([(t + 1) / 10])
        assert terminated == (t == 9) and not truncated
    custom = gym.make("torchrl_amago/BernoulliBandit-v0", n_arms=3, n_pulls=4)
    assert custom.action_space == gym.spaces.Discrete(3)
    assert gym.make("torchrl_amago/HiddenDoor-v0").action_space == gym.spaces.Discrete(5)


def test_gym_id_through_the_generic_wrappers():
    env = make_amago_env(make_gym_envs("torchrl_amago/BernoulliBandit-k2-n10-v0", 3))
    env.set_seed(0)
    data = check_amago_env(env, steps_per_env=25)
    done = data["next", "done"].squeeze(-1)
    assert done[:, 9].all() and done[:, 19].all() and done.sum() == 6  # a trial is 10 steps
    assert data["next", "terminated"].squeeze(-1)[:, 9].all()
