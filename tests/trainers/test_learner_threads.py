"""LearnerThreads: the learner's torch threads beside collector workers on the same machine (fake clock)."""
import pytest
import torch

from torchrl_amago.trainers.threads import SHORT_BURST_PHASES, LearnerThreads


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture(autouse=True)
def keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_threads_leave_a_core_to_each_acting_worker():
    lt = LearnerThreads(max_threads=8, num_workers=3, cores=8)
    assert [lt.threads_for(a) for a in (0, 1, 2, 3)] == [8, 7, 6, 5]
    assert lt.threads_for(None) == 5  # unknown: every worker acts
    assert lt.threads_for(7) == 5  # never more workers than there are
    assert LearnerThreads(max_threads=4, num_workers=1, cores=8).threads_for(1) == 4  # max_threads caps it
    assert LearnerThreads(max_threads=2, num_workers=4, cores=2).threads_for(4) == 1  # at least one
    assert LearnerThreads(max_threads=4, num_workers=2, threads_per_worker=2, cores=6).threads_for(2) == 2


def test_long_bursts_take_a_core_and_short_ones_are_shared():
    clock = Clock()
    lt = LearnerThreads(max_threads=2, num_workers=1, cores=2, clock=clock)
    phase = 0.03

    def run(pattern):  # one check per phase; 1 = the worker acts at that check
        out = []
        for acting in pattern:
            out.append(lt.apply(acting))
            clock.t += phase
        return out

    # before any burst has ended, a burst counts as long: the learner gives the worker its core at once
    assert run([0, 1, 1, 1, 1, 1, 1, 0]) == [2, 1, 1, 1, 1, 1, 1, 2]
    assert lt.burst_s == pytest.approx(6 * phase) and lt.phase_s == pytest.approx(phase)
    assert not lt.short_bursts()
    # bursts of one phase: the running mean falls below SHORT_BURST_PHASES phases, then the learner keeps both
    threads = run([1, 0] * 12)
    assert lt.burst_s < SHORT_BURST_PHASES * lt.phase_s and lt.short_bursts()
    assert threads[:2] == [1, 2] and threads[-2:] == [2, 2]
    # long bursts again: back to giving the core while the worker acts
    threads = run(([1] * 10 + [0]) * 6)
    assert not lt.short_bursts() and threads[-11:] == [1] * 10 + [2]
    assert torch.get_num_threads() == 2


def test_restore_sets_max_threads_and_starts_a_new_interval():
    clock = Clock()
    lt = LearnerThreads(max_threads=2, num_workers=1, cores=2, clock=clock)
    lt.apply(1)
    assert torch.get_num_threads() == 1
    clock.t = 100.0  # e.g. an eval between two epochs: not a phase, not a burst
    lt.restore()
    assert torch.get_num_threads() == 2
    lt.apply(0)
    assert lt.phase_s is None and lt.burst_s is None


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_threads >= 1"):
        LearnerThreads(max_threads=0, num_workers=1)
