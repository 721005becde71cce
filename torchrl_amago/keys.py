"""The per-step TensorDict key names of AMAGO's data contract (docs/architecture.md §2), defined once; every
component takes its key names as arguments with these defaults. Every layer may import this file.
"""
from __future__ import annotations

# ---- written per step by the env transforms (at the root and under "next")
#: a_{t-1} as features ``[*, A]`` float (one-hot for discrete); zeros after a hard reset (``PrevActionReward``)
PREV_ACTION = "prev_action"
#: r_{t-1} ``[*, 1]`` float (raw env reward); 0 after a hard reset (``PrevActionReward``)
PREV_REWARD = "prev_reward"
#: steps since the last hard reset ``[*, 1]`` int64 (``EpisodeTime``; soft resets do not restart it)
TIME_IDX = "time_idx"
#: how often each discrete action was taken since the hard reset ``[*, A]`` float (``ActionCounts``, opt-in;
#: an observation the timestep encoder reads)
ACTION_COUNTS = "action_counts"
#: first step after a hard reset ``[*, 1]`` bool (TorchRL's ``InitTracker``)
IS_INIT = "is_init"
#: the action taken, in the env's own encoding
ACTION = "action"
#: ``[.., 1]`` bool, written while collecting: exploration replaced the policy's action (discrete: by another action;
#: continuous: by a noisy one)
EXPLORED = "explored"
#: TorchRL's step outputs (under "next")
REWARD, TERMINATED, TRUNCATED, DONE = "reward", "terminated", "truncated", "done"
#: TorchRL's ``StepCounter`` key: a counter, never an observation
STEP_COUNT = "step_count"

# ---- per-episode bookkeeping inside a trial (``MetaTrial`` and the builtin multi-episode envs); never inputs
SOFT_RESET = "soft_reset"
EPISODE_END = "episode_end"
EPISODE_RETURN = "episode_return"
EPISODE_COUNT = "episode_count"
EPISODE_SUCCESS = "episode_success"
#: int64 ``[*, 1]`` index of the task/game an env slot runs (multi-task envs)
TASK_ID = "task_id"

# ---- written by the replay / the modules
#: ``[B, T]`` bool, False on padding (the sequence replay)
MASK = "mask"
#: TorchRL's validity mask (``LossModule.loss_mask_key="auto"`` reads it): the replay writes the padding mask here too
TORCHRL_MASK = ("collector", "mask")
#: int64 per stored step: the id of its stored trial (unique for the buffer's lifetime) and its offset in that trial;
#: ``SliceSampler(traj_key=TRIAL_ID, step_key=TRIAL_STEP, fragmented=True)`` reads the replay's storage with them
TRIAL_ID = ("replay", "trial_id")
TRIAL_STEP = ("replay", "step")
#: ``[R, T+1]`` int64 window id of each position when the loss packs several windows into a row (-1: unused)
SEGMENT = "segment"
#: timestep-encoder output ``[*, D]``
TSTEP_EMB = "tstep_emb"
#: trajectory-encoder output ``[*, D]``
STATE_EMB = "state_emb"

#: the per-step inputs the transforms add to any env (besides the env's observations)
STEP_KEYS = (PREV_ACTION, PREV_REWARD, TIME_IDX, IS_INIT)
#: keys a timestep encoder never reads as observations (with every ``episode_*`` key and keys starting with '_')
NOT_OBSERVATIONS = frozenset({PREV_ACTION, PREV_REWARD, TIME_IDX, IS_INIT, STEP_COUNT, TASK_ID, EXPLORED})

__all__ = [
    "ACTION", "ACTION_COUNTS", "DONE", "EPISODE_COUNT", "EPISODE_END", "EPISODE_RETURN", "EPISODE_SUCCESS", "IS_INIT",
    "MASK", "NOT_OBSERVATIONS", "PREV_ACTION", "PREV_REWARD", "REWARD", "SEGMENT", "SOFT_RESET", "STATE_EMB",
    "STEP_COUNT", "STEP_KEYS", "TASK_ID", "TERMINATED", "TIME_IDX", "TORCHRL_MASK", "TRIAL_ID", "TRIAL_STEP",
    "TRUNCATED", "TSTEP_EMB",
]
