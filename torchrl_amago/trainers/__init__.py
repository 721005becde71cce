"""The ready trainer: typed config, common CLI, epoch loop with checkpoint/resume and logging."""
from .checkpoint import CheckpointError
from .cli import Derived, build_parser, example_args, parse_config, parse_key_values
from .config import FIELD_CHOICES, TrainConfig
from .factory import (AgentModules, build_agent_modules, build_exploration, build_heads, build_loss, build_policy,
                      build_timestep_encoder, build_trajectory_encoder)
from .flag_help import FIELD_HELP
from .logging import RunLogger
from .metrics import episode_metrics, finished_trial_returns, return_metrics
from .graphed_update import GraphedUpdate
from .guards import NonFiniteError
from .presets import (CPU_PRESET, MANY_ACTION_PRESET, MANY_ACTIONS, SAMPLED_DISCRETE_PRESET, cpu_preset,
                      many_action_preset, sampled_discrete_preset, share_of_run)
from .trainer import AMAGOTrainer, print_summary

__all__ = ["CheckpointError", "build_parser", "example_args", "parse_config", "TrainConfig", "AgentModules", "build_agent_modules",
           "build_exploration", "build_heads", "build_loss", "build_policy", "build_timestep_encoder",
           "build_trajectory_encoder", "RunLogger", "episode_metrics", "finished_trial_returns", "return_metrics",
           "AMAGOTrainer", "print_summary", "Derived", "FIELD_CHOICES", "FIELD_HELP", "CPU_PRESET", "cpu_preset",
           "MANY_ACTIONS", "MANY_ACTION_PRESET", "many_action_preset", "SAMPLED_DISCRETE_PRESET",
           "sampled_discrete_preset",
           "share_of_run", "parse_key_values", "NonFiniteError", "GraphedUpdate"]
