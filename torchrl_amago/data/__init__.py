"""Sequence replay on disk (LazyMemmapStorage): [B, T] windows of one trial with a padding mask, offline
trials, mixing of several buffers, and hindsight relabeling of whole trials."""
from .d4rl import load_d4rl_trials, read_d4rl_hdf5, write_cartpole_dataset, write_d4rl_hdf5
from .minari import load_minari_trials
from .mixed import MixedReplay
from .offline import DATASET_FORMATS, arrays_to_trials, load_dataset_trials, load_offline_trials, split_trials
from .relabel import HindsightRelabel, RelabelResult, sequential_goal_rewards
from .replay import SequenceReplayBuffer, TrialStorage, make_sequence_replay
from .safe_files import UnsafeFileError, check_folder, load_json, load_tensors, read_hdf5
from .sampler import TrialWindowSampler, draw_starts, window_offsets
from .trial_index import TrialIndex
from .writer import TrialWriter, plan_pieces

__all__ = [
    "make_sequence_replay", "SequenceReplayBuffer", "TrialWriter", "TrialWindowSampler", "TrialIndex", "TrialStorage",
    "plan_pieces", "draw_starts", "window_offsets", "load_offline_trials", "arrays_to_trials", "split_trials",
    "load_d4rl_trials", "read_d4rl_hdf5", "write_d4rl_hdf5", "load_minari_trials", "MixedReplay", "HindsightRelabel",
    "RelabelResult", "sequential_goal_rewards", "write_cartpole_dataset", "DATASET_FORMATS", "load_dataset_trials",
    "UnsafeFileError", "load_tensors", "load_json", "check_folder", "read_hdf5",
]
