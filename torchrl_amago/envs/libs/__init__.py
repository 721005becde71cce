"""Adapters for third-party suites. Each imports its package lazily and names it in the error when missing."""
from .popgym import make_popgym_env, make_popgym_gym, make_popgym_torchrl, popgym_env_names, popgym_episode_length

__all__ = ["make_popgym_env", "make_popgym_gym", "make_popgym_torchrl", "popgym_env_names", "popgym_episode_length"]
