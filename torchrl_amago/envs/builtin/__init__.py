"""Batched pure-torch builtin envs (``EnvBase`` with batch size ``[N]``, or ``[]`` with ``num_envs=None``)."""
from ._base import BatchedTorchEnv
from .bandit import BanditBelief, BernoulliBandit, bandit_optimal_returns
from .frozen_lake import MetaFrozenLake, random_lake_maps
from .gym_ids import register_ids
from .hidden_door import HiddenDoor, hidden_door_optimal_returns, hidden_door_optimal_success
from .key_door import DarkKeyDoor
from .mazerunner import MazeRunner, mazerunner_relabel_rewards, random_maze
from .no_repeat import NoRepeat
from .tmaze import TMaze

__all__ = ["BatchedTorchEnv", "TMaze", "MetaFrozenLake", "DarkKeyDoor", "MazeRunner", "mazerunner_relabel_rewards",
           "NoRepeat", "random_maze", "random_lake_maps", "HiddenDoor", "hidden_door_optimal_returns",
           "hidden_door_optimal_success", "BernoulliBandit", "BanditBelief", "bandit_optimal_returns"]

register_ids()  # gymnasium ids for the generic gymnasium path (gym_ids.py)
