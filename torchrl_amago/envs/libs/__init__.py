"""Adapters for third-party suites. Each imports its package lazily and names it in the error when missing
(importing this module needs none of them). One module per suite; see docs/domains/ for each one."""
from .alchemy import make_alchemy_env
from .atari import atari_game_names, make_atari_env, make_atari_gym
from .babyai import MultitaskMetaBabyAI, babyai_task_names, make_babyai_env
from .dm_env_bridge import DMEnvWrapper, make_dm_env
from .gymnax import gymnax_env_names, make_gymnax_env
from .half_cheetah_vel import MetaVelocity, make_half_cheetah_vel_env, make_half_cheetah_vel_gym
from .jax_bridge import JaxBatchedEnv
from .metaworld import KShotMetaworld, make_metaworld_env, metaworld_task_names
from .popgym import make_popgym_env, make_popgym_gym, make_popgym_torchrl, popgym_env_names, popgym_episode_length
from .popgym_multidomain import MULTIDOMAIN_POPGYM_GAMES, MultiDomainPOPGym, make_multidomain_popgym_env
from .procgen import TwoAttemptMTProcgen, make_procgen_env
from .xland import XLandTrialEnv, make_xland_env, xland_benchmark_names

__all__ = ["make_alchemy_env", "atari_game_names", "make_atari_env", "make_atari_gym", "MultitaskMetaBabyAI",
           "babyai_task_names", "make_babyai_env", "DMEnvWrapper", "make_dm_env", "gymnax_env_names",
           "make_gymnax_env", "MetaVelocity", "make_half_cheetah_vel_env", "make_half_cheetah_vel_gym",
           "JaxBatchedEnv", "KShotMetaworld", "make_metaworld_env", "metaworld_task_names", "make_popgym_env",
           "make_popgym_gym", "make_popgym_torchrl", "popgym_env_names", "popgym_episode_length",
           "MULTIDOMAIN_POPGYM_GAMES", "MultiDomainPOPGym", "make_multidomain_popgym_env",
           "TwoAttemptMTProcgen", "make_procgen_env", "XLandTrialEnv", "make_xland_env", "xland_benchmark_names"]
