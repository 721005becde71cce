"""The adaptation report (trainers/metrics.py): per-attempt means and the first -> last attempt gain with a t interval,
on hand-made rollouts whose answers are worked out by hand, on builtin envs, and combined over seeds."""
import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_amago.envs import DarkKeyDoor, MetaFrozenLake, TMaze, make_amago_env
from torchrl_amago.trainers.metrics import (_t95, adaptation_report, attempt_records,
                                            combine_adaptation_reports, episode_metrics)

T3 = 3.182446305284263  # t_{0.975, 3}


def rollout(rows, is_init=None):
    """A [N, T] rollout from per-row step lists. A step is None (no attempt ends), "D" (the trial ends, no attempt
    ends with it), or (k, return, success[, "D"]): attempt k (0-based) ends here [and so does the trial]."""
    N, T = len(rows), len(rows[0])
    assert all(len(r) == T for r in rows)
    end, done, succ = (torch.zeros(N, T, 1, dtype=torch.bool) for _ in range(3))
    count = torch.zeros(N, T, 1, dtype=torch.int64)
    ret = torch.zeros(N, T, 1)
    for i, row in enumerate(rows):
        c = 0
        for t, s in enumerate(row):
            if s == "D":
                done[i, t] = True
            elif s is not None:
                c = s[0] + 1
                end[i, t], ret[i, t], succ[i, t] = True, s[1], bool(s[2])
                done[i, t] = len(s) > 3
            count[i, t] = c
            if done[i, t]:
                c = 0
    td = TensorDict({"next": TensorDict({"episode_end": end, "episode_count": count, "episode_return": ret,
                                         "episode_success": succ, "done": done, "reward": ret}, [N, T])}, [N, T])
    if is_init is not None:
        td["is_init"] = torch.zeros(N, T, 1, dtype=torch.bool)
        td["is_init"][:, 0, 0] = torch.tensor(is_init)
    return td


# three rows of 8 steps: complete trials A [0, 1, 1], B [1, 1, 1], D [0, 0, 1], F [.5, .5, 0]; C, E, G are cut by
# the window's end (E and C after one attempt: counting them would move attempt 0's mean to 2.5 / 6)
ROWS = [
    [(0, 0, 0), (1, 1, 1), (2, 1, 1, "D"), (0, 1, 1), (1, 1, 1), (2, 1, 1, "D"), (0, 0, 0), None],  # A, B, C
    [None, (0, 0, 0), (1, 0, 0), None, (2, 1, 1, "D"), (0, 1, 1), None, None],  # D, E
    [(0, .5, 0), None, (1, .5, 0), (2, 0, 0, "D"), None, None, None, None],  # F, G
]


def test_report_by_hand():
    rep = adaptation_report(rollout(ROWS))
    assert [rep[f"eval/episode_{k}_return"] for k in range(3)] == pytest.approx([0.375, 0.625, 0.75])
    assert [rep[f"eval/episode_{k}_success"] for k in range(3)] == pytest.approx([0.25, 0.5, 0.75])
    assert [rep[f"eval/episode_{k}_trials"] for k in range(3)] == [4, 4, 4]
    # gains (last - first) per trial: 1, 0, 1, -0.5: mean .375, sd .75, se .375
    assert rep["eval/adaptation_gain_return"] == pytest.approx(0.375)
    assert rep["eval/adaptation_gain_return_ci_low"] == pytest.approx(0.375 - T3 * 0.375)
    assert rep["eval/adaptation_gain_return_ci_high"] == pytest.approx(0.375 + T3 * 0.375)
    # success gains 1, 0, 1, 0: mean .5, sd sqrt(1/3), se sqrt(1/12)
    assert rep["eval/adaptation_gain_success"] == pytest.approx(0.5)
    assert rep["eval/adaptation_gain_success_ci_high"] == pytest.approx(0.5 + T3 * math.sqrt(1 / 12))
    assert rep["eval/adaptation_trials"] == 4 and rep["eval/adaptation_trials_dropped"] == 3
    # the same with the known bound (the longest trial, D, lasts 5 steps) and from the records
    assert adaptation_report(rollout(ROWS), max_trial_steps=5) == rep
    assert adaptation_report(attempt_records(rollout(ROWS))) == rep
    # other prefix; the intervals are 95 % ones
    rep95 = adaptation_report(rollout(ROWS), "final")
    assert rep95["final/adaptation_gain_return_ci_high"] == pytest.approx(0.375 + T3 * 0.375)
    with pytest.raises(ValueError, match="confidence"):
        adaptation_report(rollout(ROWS), "final", confidence=0.9)


def test_a_trial_that_began_early_enough_must_finish():
    # G begins at step 4: with max_trial_steps=4 it should have ended by step 7
    with pytest.raises(ValueError, match="max_trial_steps=4"):
        attempt_records(rollout(ROWS), max_trial_steps=4)


def test_trials_are_kept_by_start_time_not_by_length():
    # row 0: short trials (2 steps) from 0, 2, 4, 6; row 1: one 6-step trial, then a cut one. The longest trial
    # lasts 6 steps, so only trials that began by step 2 count: two short ones and the long one. Keeping every
    # finished trial would count 4 short ones against 1 long one.
    short, long_ = [(0, 0, 0), (1, 1, 1, "D")], [(0, 0, 0), None, None, None, None, (1, 0, 0, "D")]
    rep = adaptation_report(rollout([short * 4, long_ + [(0, 1, 1), None]]))
    assert rep["eval/episode_0_trials"] == 3 and rep["eval/adaptation_trials_dropped"] == 3
    assert rep["eval/adaptation_gain_return"] == pytest.approx(2 / 3)  # gains 1, 1, 0
    assert rep["eval/episode_1_return"] == pytest.approx(2 / 3)


def test_trials_begun_before_the_window_are_dropped():
    row = [(0, 0, 0), (1, 1, 1), (2, 1, 1, "D"), (0, 0, 0), (1, 0, 0), (2, 0, 0, "D")]
    # is_init False at the row start: the first trial began before the window
    rep = adaptation_report(rollout([row], is_init=[False]))
    assert rep["eval/adaptation_trials"] == 1 and rep["eval/adaptation_gain_return"] == 0.0
    rep = adaptation_report(rollout([row], is_init=[True]))
    assert rep["eval/adaptation_trials"] == 2 and rep["eval/adaptation_gain_return"] == 0.5
    # no is_init key, but the first attempt seen is attempt 1: begun before the window
    rep = adaptation_report(rollout([[(1, 1, 1), (2, 1, 1, "D")] + row[3:]]))
    assert rep["eval/adaptation_trials"] == 1 and rep["eval/episode_0_return"] == 0.0
    assert rep["eval/episode_2_trials"] == 1 and rep["eval/episode_2_return"] == 0.0


def test_a_trial_longer_than_every_finished_one_is_dropped():
    # row 0's second trial began at step 2, early enough for the longest finished trial (2 steps), but it is
    # still running at the window's end: it is dropped, its finished attempt 0 included
    rep = adaptation_report(rollout([[(0, 0, 0), (1, 1, 1, "D"), (0, 1, 1), None, None, None, None, None]]))
    assert rep["eval/episode_0_trials"] == 1 and rep["eval/episode_0_return"] == 0.0
    assert rep["eval/adaptation_trials_dropped"] == 1


def test_variable_attempt_counts_and_last_attempt():
    rows = [[(0, 0, 0), (1, 1, 1), None, None, "D"],  # X: 2 attempts, gain 1
            [(0, 1, 1), (1, 0, 0), (2, 0, 0), None, (3, 0, 0, "D")],  # Y: 4 attempts, gain -1
            [(0, 1, 1), None, None, None, "D"]]  # Z: 1 attempt, no gain
    rep = adaptation_report(rollout(rows))
    assert [rep[f"eval/episode_{k}_trials"] for k in range(4)] == [3, 2, 1, 1]
    assert rep["eval/episode_0_return"] == pytest.approx(2 / 3) and rep["eval/episode_1_return"] == 0.5
    assert rep["eval/adaptation_trials"] == 2 and rep["eval/adaptation_gain_return"] == 0.0
    half = 12.706204736174705 * math.sqrt(2) / math.sqrt(2)  # t_{0.975, 1} * sd / sqrt(n)
    assert rep["eval/adaptation_gain_return_ci_high"] == pytest.approx(half)
    rep3 = adaptation_report(rollout(rows), last_attempt=3)
    assert rep3["eval/adaptation_trials"] == 1 and rep3["eval/adaptation_gain_return"] == -1.0
    assert math.isnan(rep3["eval/adaptation_gain_return_ci_low"])
    rep1 = adaptation_report(rollout(rows), last_attempt=1)
    assert rep1["eval/adaptation_trials"] == 2 and rep1["eval/adaptation_gain_return"] == 0.0  # 1 and 0 - 1
    with pytest.raises(ValueError, match="last_attempt"):
        adaptation_report(rollout(rows), last_attempt=0)
    assert adaptation_report(rollout(rows), last_attempt=9)["eval/adaptation_trials"] == 0


def test_nothing_to_report():
    assert adaptation_report(TMaze(4, corridor_length=2).rollout(10, break_when_any_done=False)) == {}
    rep = adaptation_report(rollout([[None, (0, 1, 1), None]]))  # no trial ends
    assert rep["eval/adaptation_trials"] == 0 and math.isnan(rep["eval/adaptation_gain_return"])
    assert rep["eval/adaptation_trials_dropped"] == 1
    with pytest.raises(KeyError, match="episode_end"):
        attempt_records(TMaze(4, corridor_length=2).rollout(10, break_when_any_done=False))


def test_t_quantiles():
    # t_{0.975, df}: exact (to 1e-6) up to 30 degrees of freedom, within 0.01 above
    table = {1: 12.7062047, 2: 4.3026527, 3: 3.1824463, 4: 2.7764451, 9: 2.2621572, 29: 2.0452296}
    for df, q in table.items():
        assert _t95(df) == pytest.approx(q, abs=1e-6)
    for df, q in {31: 2.0395134, 40: 2.0210754, 120: 1.9799304, 1000: 1.9623391}.items():
        assert _t95(df) == pytest.approx(q, abs=0.01)


def test_combine_seeds_by_hand():
    t9 = _t95(9)

    def seed(gain, se, n=10):
        return {"eval/adaptation_gain_return": gain, "eval/adaptation_gain_return_ci_low": gain - t9 * se,
                "eval/adaptation_gain_return_ci_high": gain + t9 * se, "eval/adaptation_trials": n,
                "eval/episode_0_return": 0.2, "eval/episode_1_return": 0.2 + gain}

    # seeds spread more than their trial noise: se = sd(0.5, 0.3, 0.7) / sqrt(3) = 0.2 / sqrt(3), t_2
    out = combine_adaptation_reports([seed(0.5, 0.1), seed(0.3, 0.1), seed(0.7, 0.1)])
    half = 4.302652729749464 * 0.2 / math.sqrt(3)
    assert out["eval/adaptation_gain_return"] == pytest.approx(0.5)
    assert out["eval/adaptation_gain_return_ci_low"] == pytest.approx(0.5 - half)
    assert out["eval/adaptation_seeds"] == 3 and out["eval/adaptation_trials"] == 30
    assert out["eval/episode_1_return"] == pytest.approx(0.7) and out["eval/episode_0_return"] == pytest.approx(0.2)
    # seeds that agree exactly: the trial noise is the floor, sqrt(0.1^2 + 0.1^2) / 2, with t_1
    out = combine_adaptation_reports([seed(0.5, 0.1), seed(0.5, 0.1)])
    assert out["eval/adaptation_gain_return_ci_high"] == pytest.approx(0.5 + 12.706204736174705 * math.sqrt(0.02) / 2)
    # one seed: its own interval; NaN seeds are skipped
    nan = {"eval/adaptation_gain_return": math.nan, "eval/adaptation_trials": 0}
    out = combine_adaptation_reports([seed(0.4, 0.05), nan])
    assert out["eval/adaptation_gain_return_ci_low"] == pytest.approx(0.4 - t9 * 0.05)
    assert out["eval/adaptation_seeds"] == 1
    assert combine_adaptation_reports([nan]) == {}


def test_combine_reports_from_rollouts():
    reps = [adaptation_report(rollout(ROWS)), adaptation_report(rollout(ROWS[:2]))]
    out = combine_adaptation_reports(reps)
    g = [0.375, (1 + 0 + 1) / 3]
    assert out["eval/adaptation_gain_return"] == pytest.approx(sum(g) / 2)
    assert out["eval/adaptation_gain_success"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["eval/adaptation_trials"] == 4 + 3


@pytest.mark.parametrize("make", [
    lambda: DarkKeyDoor(16, size=3, max_episode_steps=4, meta_horizon=20, seed=0),
    lambda: make_amago_env(DarkKeyDoor(16, size=3, max_episode_steps=4, meta_horizon=20, seed=0)),
])
def test_on_dark_key_door_matches_episode_metrics(make):
    env = make()
    torch.manual_seed(1)
    ro = env.rollout(40, break_when_any_done=False)  # exactly two 20-step trials per env: none dropped
    rep, ep = adaptation_report(ro), episode_metrics(ro, "eval")
    assert rep["eval/adaptation_trials_dropped"] == 0
    assert rep["eval/episode_0_trials"] == 32
    for k in range(3):
        assert rep[f"eval/episode_{k}_return"] == pytest.approx(ep[f"eval/episode_{k}_return"])
        assert rep[f"eval/episode_{k}_success"] == pytest.approx(ep[f"eval/episode_{k}_success"])


def test_on_meta_frozen_lake_and_meta_trial():
    env = make_amago_env(MetaFrozenLake(64, size=3, k_episodes=3, max_episode_steps=8, seed=0))
    torch.manual_seed(1)
    ro = env.rollout(48, break_when_any_done=False)  # trials of 3 to 24 steps
    rep = adaptation_report(ro, max_trial_steps=24)
    n = rep["eval/adaptation_trials"]
    assert n >= 64 and all(rep[f"eval/episode_{k}_trials"] == n for k in range(3))  # k attempts in every trial
    assert rep["eval/adaptation_trials_dropped"] > 0
    assert 0 < rep["eval/episode_0_success"] < 1
    assert rep["eval/adaptation_gain_return_ci_low"] < rep["eval/adaptation_gain_return"] < \
        rep["eval/adaptation_gain_return_ci_high"]

    # MetaTrial over a plain env (no success key): T-Maze, 2 episodes of 3 steps per trial
    env = make_amago_env(TMaze(8, corridor_length=2, seed=0), k_episodes=2)
    torch.manual_seed(1)
    rep = adaptation_report(env.rollout(18, break_when_any_done=False))
    assert rep["eval/adaptation_trials"] == 8 * 3 and "eval/episode_0_success" not in rep
    assert "eval/adaptation_gain_success" not in rep and rep["eval/adaptation_trials_dropped"] == 0
