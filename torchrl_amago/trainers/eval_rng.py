"""Evaluations on their own random streams (`--own_eval_rng`), so that how often and how long a run evaluates
does not change what it trains on.

An eval draws from the process's global generators: sampled actions (`--sample_actions_eval`, on by default) from
torch's, and envs that use the global numpy or Python generators from those. Without this, the updates after an
eval sample other batches, dropout masks and exploration than the same run with other eval settings would. With
it, the eval runs inside a fork of torch's CPU (and CUDA) generators and saved copies of numpy's and Python's,
seeded from `(seed, grad_steps)`: the training streams continue as if no eval had run, and the eval's own draws
depend only on the run's seed and its update count.
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

EVAL_STREAM = 10_000  # the eval envs are seeded with seed + this; the evals' own streams mix it in too


def eval_seed(seed: int, grad_steps: int) -> int:
    """The seed of the eval after `grad_steps` updates of a run seeded `seed` (distinct per eval and per run)."""
    return int(np.random.SeedSequence([int(seed), EVAL_STREAM, int(grad_steps)]).generate_state(1, np.uint32)[0])


@contextlib.contextmanager
def own_random_streams(seed: int):
    """Run the body with torch (CPU and every initialized CUDA device), numpy and Python seeded from `seed`, then
    put every generator back where it was."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=cuda):  # puts torch's generators back on exit
        torch.random.default_generator.manual_seed(seed)
        if cuda:  # (torch.manual_seed would also queue a seed for a CUDA that starts later)
            torch.cuda.manual_seed_all(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
