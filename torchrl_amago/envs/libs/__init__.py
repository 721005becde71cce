"""Adapters for third-party suites, each importing its package lazily (docs/domains/ for each one)."""
from .alchemy import (ALCHEMY_LEVEL, ALCHEMY_NUM_TRIALS, ALCHEMY_STEPS_PER_TRIAL, alchemy_episode_length,
                      make_alchemy_env, symbolic_alchemy_module)
from .atari import (ACTION_SPACES as ATARI_ACTION_SPACES, DEFAULT_GAMES as ATARI_GAMES,
                    TIME_LIMIT_FRAMES as ATARI_TIME_LIMIT_FRAMES, atari_game_names, make_atari_env, make_atari_gym)
from .babyai import (OBS_KINDS as BABYAI_OBS_KINDS, MultitaskMetaBabyAI, babyai_max_steps, babyai_task_names,
                     full_task_name, make_babyai_env, max_trial_length as babyai_max_trial_length)
from .dm_env_bridge import DMEnvWrapper, make_dm_env
from .gym import SameTaskGymEnv, SameTaskGymWrapper, gym_action_info, gym_time_limit, make_gym_env, make_gym_envs
from .gymnax import gymnax_env_names, make_gymnax_env
from .half_cheetah_vel import (MetaVelocity, make_half_cheetah_vel_env, make_half_cheetah_vel_gym,
                               velocity_bucket_names)
from .jax_bridge import JaxBatchedEnv
from .metaworld import (KShotMetaworld, canonical_benchmark_name, make_benchmark, make_metaworld_env,
                        metaworld_task_names)
from .popgym import (make_popgym_env, make_popgym_gym, make_popgym_torchrl, popgym_env_names, popgym_episode_length,
                     popgym_num_actions)
from .popgym_multidomain import (MULTIDOMAIN_POPGYM_GAMES, MULTIDOMAIN_POPGYM_GAMMAS, MultiDomainPOPGym,
                                 make_multidomain_popgym_env, multidomain_popgym_layout)
from .procgen import (PROCGEN_GAMES, PROCGEN_PIP_PACKAGE, PROCGEN_SETTINGS, PROCGEN_TEST_SEED_MAX, TwoAttemptMTProcgen,
                      make_procgen_env)
from .xland import XLandTrialEnv, make_xland_env, xland_benchmark_names

__all__ = ["ALCHEMY_LEVEL", "ALCHEMY_NUM_TRIALS", "ALCHEMY_STEPS_PER_TRIAL", "alchemy_episode_length",
           "symbolic_alchemy_module", "canonical_benchmark_name", "make_benchmark", "make_alchemy_env",
           "ATARI_ACTION_SPACES", "ATARI_GAMES", "ATARI_TIME_LIMIT_FRAMES", "atari_game_names", "make_atari_env",
           "make_atari_gym", "MultitaskMetaBabyAI", "BABYAI_OBS_KINDS", "babyai_max_steps", "babyai_max_trial_length",
           "full_task_name", "babyai_task_names", "make_babyai_env", "DMEnvWrapper", "make_dm_env", "SameTaskGymEnv",
           "SameTaskGymWrapper", "gym_action_info", "gym_time_limit", "make_gym_env", "make_gym_envs", "gymnax_env_names", "make_gymnax_env",
           "MetaVelocity", "make_half_cheetah_vel_env", "make_half_cheetah_vel_gym", "velocity_bucket_names",
           "JaxBatchedEnv", "KShotMetaworld", "make_metaworld_env", "metaworld_task_names", "make_popgym_env",
           "make_popgym_gym", "make_popgym_torchrl", "popgym_env_names", "popgym_episode_length", "popgym_num_actions",
           "MULTIDOMAIN_POPGYM_GAMES", "MULTIDOMAIN_POPGYM_GAMMAS", "MultiDomainPOPGym", "make_multidomain_popgym_env",
           "multidomain_popgym_layout", "PROCGEN_GAMES", "PROCGEN_PIP_PACKAGE", "PROCGEN_SETTINGS",
           "PROCGEN_TEST_SEED_MAX", "TwoAttemptMTProcgen", "make_procgen_env", "XLandTrialEnv", "make_xland_env",
           "xland_benchmark_names"]
