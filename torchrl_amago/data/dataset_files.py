"""One entry point for the local offline-dataset formats: a D4RL-format HDF5 file or a Minari dataset."""
from __future__ import annotations

import os
from typing import Sequence

from tensordict import TensorDict

__all__ = ["DATASET_FORMATS", "load_dataset_trials"]

DATASET_FORMATS = ("d4rl", "minari")


def load_dataset_trials(path: str | os.PathLike, format: str = "d4rl", *, num_actions: int | None = None,
                        action_bounds: Sequence | None = None, one_hot_actions: bool = False) -> TensorDict:
    """Trials of a local dataset for ``AMAGOTrainer(offline_data=...)``. ``action_bounds``: ``(low, high)`` of Box
    actions to rescale to ``[-1, 1]`` (None: already in range); a missing D4RL file is a FileNotFoundError."""
    if format not in DATASET_FORMATS:
        raise ValueError(f"dataset format {format!r} is not one of {list(DATASET_FORMATS)}")
    if format == "d4rl":
        from .d4rl import load_d4rl_trials

        if not os.path.exists(path):
            raise FileNotFoundError(f"dataset {str(path)!r} not found (datasets are never downloaded here)")
        return load_d4rl_trials(path, num_actions=num_actions, one_hot_actions=one_hot_actions,
                                action_bounds=action_bounds)
    from .minari import load_minari_trials

    return load_minari_trials(path, num_actions=num_actions, one_hot_actions=one_hot_actions,
                              rescale_box_actions=action_bounds is not None)
