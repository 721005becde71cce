"""The ready trainer: typed config, common CLI, epoch loop with checkpoint/resume and logging."""
from .checkpoint import CheckpointError
from .cli import build_parser, example_args, parse_config
from .config import TrainConfig
from .factory import (AgentModules, build_agent_modules, build_exploration, build_heads, build_loss, build_policy,
                      build_timestep_encoder, build_trajectory_encoder)
from .logging import RunLogger
from .metrics import episode_metrics, finished_trial_returns, return_metrics
from .trainer import AMAGOTrainer, print_summary

__all__ = ["CheckpointError", "build_parser", "example_args", "parse_config", "TrainConfig", "AgentModules", "build_agent_modules",
           "build_exploration", "build_heads", "build_loss", "build_policy", "build_timestep_encoder",
           "build_trajectory_encoder", "RunLogger", "episode_metrics", "finished_trial_returns", "return_metrics",
           "AMAGOTrainer", "print_summary"]

from .guards import NonFiniteError  # noqa: E402

__all__ += ["NonFiniteError"]
