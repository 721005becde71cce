"""TrialStorage: the sequence replay's ``LazyMemmapStorage``, which refuses readers that would misread it.

The replay writes each collector batch at once, so a trial of one env is stored as one segment per batch,
interleaved with the segments of the other envs (and of other workers). TorchRL's ``SliceSampler`` finds
trajectories by storage order unless ``fragmented=True``: with ``end_key`` its windows straddle trials and envs,
with ``traj_key`` alone they stop at every collector batch (or it finds no trajectory long enough). Every stored
step carries its trial's id and its offset in the trial (``keys.TRIAL_ID`` / ``keys.TRIAL_STEP``, written by
:class:`~torchrl_amago.data.writer.TrialWriter`), and that is what a fragmented ``SliceSampler`` reads.
"""
from __future__ import annotations

from torchrl.data import LazyMemmapStorage, SliceSampler

from .. import keys as K
from .safe_files import UnsafeFileError

#: what to use instead, quoted by the error
SLICE_SAMPLER_RECIPE = (f"SliceSampler(slice_len=..., traj_key={K.TRIAL_ID!r}, step_key={K.TRIAL_STEP!r}, "
                        f"fragmented=True)")


def check_reader(buffer) -> None:
    """Raise ValueError if ``buffer``'s sampler is a ``SliceSampler`` that finds trajectories by storage order."""
    sampler = getattr(buffer, "_sampler", None) or getattr(buffer, "_init_sampler", None)
    if isinstance(sampler, SliceSampler) and not getattr(sampler, "fragmented", False):
        how = "end_key" if not getattr(sampler, "_fetch_traj", True) else f"traj_key={sampler.traj_key!r}"
        raise ValueError(
            f"{type(sampler).__name__}({how}) cannot read the sequence replay's storage: it finds trajectories by "
            f"storage order, but each trial is stored as one segment per collector batch, interleaved with the "
            f"other envs' segments, so its windows would straddle trials and envs (end_key) or stop at every "
            f"collector batch (traj_key without fragmented=True). Use {SLICE_SAMPLER_RECIPE}: every stored step "
            f"carries its trial id and its offset in the trial (docs/api/data.md, 'TorchRL's SliceSampler').")


class TrialStorage(LazyMemmapStorage):
    """``LazyMemmapStorage`` (same arguments and files) whose ``attach`` refuses a ``SliceSampler`` that would find
    trajectories by storage order (see the module docstring): a buffer built on it with such a sampler raises a
    ``ValueError`` naming ``SliceSampler(traj_key=TRIAL_ID, step_key=TRIAL_STEP, fragmented=True)``.

    It never reads TorchRL's storage format: ``loads`` / ``load`` (which would go through tensordict's
    ``load_memmap``, and that unpickles any ``NonTensorData`` a folder holds) raise :class:`UnsafeFileError` naming
    the folder before touching it, and ``shared_init=True`` (whose other processes ``load_memmap`` the scratch
    folder) is refused. Load a replay with ``SequenceReplayBuffer.loads``. ``dumps`` still writes TorchRL's format
    (writing runs nothing)."""

    def __init__(self, max_size: int, **kwargs):
        if kwargs.get("shared_init"):
            raise ValueError("TrialStorage(shared_init=True) is not supported: its other processes would read the "
                             "scratch folder with tensordict's load_memmap, which can unpickle data; the sequence "
                             "replay is written by one process")
        super().__init__(max_size, **kwargs)

    def attach(self, buffer) -> None:
        check_reader(buffer)
        super().attach(buffer)

    def loads(self, path) -> None:
        raise UnsafeFileError(
            f"TrialStorage.loads({path}): refused without reading it: TorchRL's storage format is read with "
            f"tensordict's load_memmap, which can unpickle (run) code a folder holds. Load a replay dump with "
            f"SequenceReplayBuffer.loads(path) (a folder written by SequenceReplayBuffer.dumps)")

    def load(self, path) -> None:
        self.loads(path)
