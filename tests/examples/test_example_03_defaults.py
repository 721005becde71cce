"""`examples/03_popgym.py` single-game defaults: count heads, an entropy bonus and greedy eval only for games with
many discrete actions (docs/results/popgym_campaign.md); flags still override them."""
import pytest

from tests.examples.test_examples_smoke import example_config

pytest.importorskip("popgym")


def _cfg(*argv):
    return example_config("03_popgym", list(argv))[1]


def _plain(cfg) -> bool:
    return not cfg.count_heads and cfg.entropy_coeff == 0.0 and cfg.sample_actions_eval


@pytest.mark.parametrize("env", ["BattleshipEasy", "ConcentrationEasy"])  # 64 and 52 actions
def test_many_action_games_get_count_heads_entropy_and_greedy_eval(env):
    cfg = _cfg("--env", env)
    assert cfg.count_heads and cfg.entropy_coeff == 0.1 and not cfg.sample_actions_eval
    assert cfg.grads_per_epoch == 60 and cfg.reward_multiplier == 100.0


@pytest.mark.parametrize("env", ["MineSweeperEasy", "RepeatPreviousMedium", "PositionOnlyPendulumEasy"])
def test_few_action_and_continuous_games_keep_the_plain_agent(env):  # 16 and 4 actions; Box actions
    assert _plain(_cfg("--env", env))


def test_flags_override_the_many_action_defaults():
    assert _plain(_cfg("--env", "BattleshipEasy", "--no-count_heads", "--entropy_coeff", "0", "--sample_actions_eval"))


def test_many_action_preset_starts_at_thirty_two_discrete_actions():
    from torchrl_amago.trainers import MANY_ACTION_PRESET, MANY_ACTIONS, many_action_preset
    assert MANY_ACTIONS == 32 and many_action_preset(31) == {} and many_action_preset(None) == {}
    assert many_action_preset(32) == MANY_ACTION_PRESET == dict(count_heads=True, entropy_coeff=0.1,
                                                                sample_actions_eval=False)
    many_action_preset(64)["count_heads"] = False  # a copy: the preset itself is unchanged
    assert MANY_ACTION_PRESET["count_heads"]
