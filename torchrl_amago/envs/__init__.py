"""Env side of torchrl_amago: AMAGO's per-step format as TorchRL transforms, exploration modules, builtin envs."""
from .builtin import (BanditBelief, BernoulliBandit, DarkKeyDoor, HiddenDoor, MazeRunner, MetaFrozenLake, NoRepeat,
                      TMaze, bandit_optimal_returns, hidden_door_optimal_returns, hidden_door_optimal_success,
                      mazerunner_relabel_rewards)
from .checks import (AMAGO_STEP_KEYS, check_alignment, check_amago_env, require_amago_keys, require_spec_shapes,
                     spec_shapes)
from .exploration import BilevelEpsilonGreedy, EpsilonGreedy, TMazeExploration
from .transforms import (BOOKKEEPING_KEYS, EPISODE_COUNT_KEY, EPISODE_END_KEY, EPISODE_RETURN_KEY,
                         EPISODE_SUCCESS_KEY, SOFT_RESET_KEY, TASK_ID_KEY, ActionCounts, EpisodeTime, MetaTrial,
                         PrevActionReward, episode_stats_spec, make_amago_env)

__all__ = ["check_amago_env", "check_alignment", "require_amago_keys", "AMAGO_STEP_KEYS",
           "spec_shapes", "require_spec_shapes", "PrevActionReward", "ActionCounts", "EpisodeTime", "MetaTrial",
           "make_amago_env", "episode_stats_spec",
           "BOOKKEEPING_KEYS", "EPISODE_END_KEY", "EPISODE_RETURN_KEY", "EPISODE_COUNT_KEY", "EPISODE_SUCCESS_KEY",
           "SOFT_RESET_KEY", "TASK_ID_KEY", "EpsilonGreedy", "BilevelEpsilonGreedy", "TMazeExploration",
           "TMaze", "MetaFrozenLake", "DarkKeyDoor", "NoRepeat", "MazeRunner", "mazerunner_relabel_rewards",
           "HiddenDoor", "hidden_door_optimal_returns", "hidden_door_optimal_success", "BernoulliBandit",
           "BanditBelief", "bandit_optimal_returns"]
