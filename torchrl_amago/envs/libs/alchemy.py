"""Symbolic DeepMind Alchemy as batched TorchRL envs, like AMAGO's ``SymbolicAlchemy``, a new level per reset
(docs/domains/alchemy.md). ``pip install git+https://github.com/google-deepmind/dm_alchemy.git``."""
from __future__ import annotations

from ..._optional import require
from ...suites import ALCHEMY_LEVEL, ALCHEMY_NUM_TRIALS, ALCHEMY_STEPS_PER_TRIAL, alchemy_episode_length
from .dm_env_bridge import DMEnvWrapper, make_dm_env

ALCHEMY_PIP = "git+https://github.com/google-deepmind/dm_alchemy.git"
ALCHEMY_OBS_KEY = "symbolic_obs"
ALCHEMY_OBS_DIM = 39  # MAX_STONES * (3 coords + reward + used) + MAX_POTIONS * (colour + used)
ALCHEMY_NUM_ACTIONS = 40  # MAX_STONES * (MAX_POTIONS + 1) + 1 no-op (no end-trial action)
_FEATURE = "symbolic Alchemy (torchrl_amago.envs.libs.alchemy)"


def symbolic_alchemy_module():
    """``dm_alchemy.symbolic_alchemy``, or ImportError naming how to install dm_alchemy (from GitHub)."""
    require("dm_env", "dm-env", _FEATURE)
    require("dm_alchemy", ALCHEMY_PIP, _FEATURE)
    return require("dm_alchemy.symbolic_alchemy", ALCHEMY_PIP, _FEATURE)


def make_alchemy_torchrl(level_name: str = ALCHEMY_LEVEL, seed: int | None = None,
                         num_trials: int = ALCHEMY_NUM_TRIALS, max_steps_per_trial: int = ALCHEMY_STEPS_PER_TRIAL,
                         categorical_action_encoding: bool = True, observation_keys=(ALCHEMY_OBS_KEY,),
                         **level_kwargs) -> DMEnvWrapper:
    """One unbatched TorchRL env: a new symbolic Alchemy level per reset, observation ``"symbolic_obs"``."""
    sa = symbolic_alchemy_module()

    def new_level(level_seed: int):
        return sa.get_symbolic_alchemy_level(level_name, seed=level_seed, num_trials=num_trials,
                                             max_steps_per_trial=max_steps_per_trial, **level_kwargs)

    return DMEnvWrapper(env_fn=new_level, recreate_on_reset=True, observation_keys=list(observation_keys),
                        categorical_action_encoding=categorical_action_encoding, seed=seed)


def make_alchemy_env(num_envs: int, level_name: str = ALCHEMY_LEVEL, num_trials: int = ALCHEMY_NUM_TRIALS,
                     max_steps_per_trial: int = ALCHEMY_STEPS_PER_TRIAL, categorical_action_encoding: bool = True,
                     observation_keys=(ALCHEMY_OBS_KEY,), **level_kwargs):
    """``num_envs`` symbolic Alchemy envs in one ``SerialEnv``; wrap it with ``make_amago_env``."""
    symbolic_alchemy_module()  # fail here, with the install line, rather than inside SerialEnv
    return make_dm_env(lambda: make_alchemy_torchrl(level_name, None, num_trials, max_steps_per_trial,
                                                    categorical_action_encoding, observation_keys, **level_kwargs),
                       num_envs)
