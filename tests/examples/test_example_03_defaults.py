"""`examples/03_popgym.py` single-game defaults: the conservative critic term for games with fewer than 32 discrete
actions, count heads, an entropy bonus, greedy eval and a decaying learning rate for games with more
(docs/results/popgym_campaign.md); flags still override them."""
import pytest

from tests.examples.test_examples_smoke import example_config

pytest.importorskip("popgym")


def _cfg(*argv):
    return example_config("03_popgym", list(argv))[1]


def _no_many_action_additions(cfg) -> bool:
    return not cfg.count_heads and cfg.entropy_coeff == 0.0 and cfg.sample_actions_eval and cfg.lr_decay == "none"


@pytest.mark.parametrize("env", ["BattleshipEasy", "ConcentrationEasy"])  # 64 and 52 actions
def test_many_action_games_get_count_heads_entropy_greedy_eval_and_a_decaying_rate(env):
    cfg = _cfg("--env", env)
    assert cfg.count_heads and cfg.entropy_coeff == 0.1 and not cfg.sample_actions_eval and cfg.lr_decay == "cosine"
    assert cfg.grads_per_epoch == 60 and cfg.reward_multiplier == 100.0


@pytest.mark.parametrize("env", ["MineSweeperEasy", "RepeatPreviousMedium", "PositionOnlyPendulumEasy"])
def test_few_action_and_continuous_games_get_no_many_action_additions(env):  # 16 and 4 actions; Box actions
    assert _no_many_action_additions(_cfg("--env", env))


@pytest.mark.parametrize("env", ["MineSweeperEasy", "RepeatPreviousMedium", "MultiarmedBanditEasy"])
def test_few_action_games_get_the_conservative_term_from_the_first_update(env):  # 16, 4 and 10 actions
    cfg = _cfg("--env", env)
    assert cfg.cql_coeff == 0.1 and cfg.cql_ramp is None  # an explicit weight: full from the first update
    assert cfg.sample_actions_train  # what the preset is for: the replay holds every action


@pytest.mark.parametrize("env", ["BattleshipEasy", "ConcentrationEasy", "PositionOnlyPendulumEasy"])
def test_many_action_and_continuous_games_have_the_term_off(env):
    assert _cfg("--env", env).cql_coeff == 0.0


def test_flags_override_the_discrete_defaults():
    cfg = _cfg("--env", "BattleshipEasy", "--no-count_heads", "--entropy_coeff", "0", "--sample_actions_eval",
               "--lr_decay", "none")
    assert _no_many_action_additions(cfg)
    assert _cfg("--env", "MineSweeperEasy", "--cql_coeff", "0").cql_coeff == 0.0


def test_many_action_preset_starts_at_thirty_two_discrete_actions():
    from torchrl_amago.trainers import MANY_ACTION_PRESET, MANY_ACTIONS, many_action_preset
    assert MANY_ACTIONS == 32 and many_action_preset(31) == {} and many_action_preset(None) == {}
    assert many_action_preset(32) == MANY_ACTION_PRESET == dict(count_heads=True, entropy_coeff=0.1,
                                                                sample_actions_eval=False, lr_decay="cosine")
    many_action_preset(64)["count_heads"] = False  # a copy: the preset itself is unchanged
    assert MANY_ACTION_PRESET["count_heads"]


def test_sampled_discrete_preset_stops_where_the_many_action_preset_starts():
    from torchrl_amago.trainers import MANY_ACTIONS, SAMPLED_DISCRETE_PRESET, sampled_discrete_preset
    assert sampled_discrete_preset(2) == sampled_discrete_preset(MANY_ACTIONS - 1) == SAMPLED_DISCRETE_PRESET
    assert SAMPLED_DISCRETE_PRESET == dict(cql_coeff=0.1)
    assert sampled_discrete_preset(MANY_ACTIONS) == sampled_discrete_preset(None) == {}
    sampled_discrete_preset(4)["cql_coeff"] = 0.0  # a copy: the preset itself is unchanged
    assert SAMPLED_DISCRETE_PRESET["cql_coeff"] == 0.1
