"""LearnerThreads: the learner's torch threads beside collector workers on the same machine (fake clock)."""
import pytest
import torch

from torchrl_amago.trainers.scale.threads import SHORT_BURST_PHASES, LearnerThreads


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


def test_workers_that_wait_on_their_envs_leave_the_learner_its_cores():
    clock = Clock()
    lt = LearnerThreads(max_threads=2, num_workers=2, cores=2, clock=clock)
    assert lt.apply(2) == 1 and lt.busy_cores() is None  # no CPU reading: one core per acting worker
    cpu = 0.0
    lt.restore()
    for _ in range(40):  # both workers act and use 0.05 cores between them (envs that sleep)
        lt.apply(2, cpu)
        clock.t += 0.1
        cpu += 0.005
    assert lt.busy_cores() == pytest.approx(0.05, abs=1e-6) and lt.apply(2, cpu) == 2
    for _ in range(60):  # now one core's worth of CPU: the learner gives one core, not two
        clock.t += 0.1
        cpu += 0.1
        lt.apply(2, cpu)
    assert 0.9 < lt.busy_cores() < 1.0 and lt.apply(2, cpu) == 1
    assert lt.acting_wall_s <= 2.0 + 0.1  # measured over the last seconds of acting only
    clock.t += 5.0
    cpu += 5.0  # CPU used while the workers were parked does not count: the interval began with none acting
    lt.apply(0, cpu)
    busy = lt.busy_cores()
    clock.t += 0.1
    lt.apply(0, cpu + 0.2)
    assert lt.busy_cores() == busy


def test_busy_cores_are_capped_at_one_per_acting_worker():
    clock = Clock()
    lt = LearnerThreads(max_threads=4, num_workers=2, cores=4, clock=clock)
    cpu = 0.0
    for _ in range(30):
        lt.apply(2, cpu)
        clock.t += 0.1
        cpu += 0.19  # 1.9 cores
    assert lt.threads_for(2) == 2 and lt.threads_for(1) == 3  # one acting worker takes at most one core


def test_process_cpu_seconds_reads_a_child_and_refuses_a_missing_one():
    import subprocess
    import sys

    from torchrl_amago.trainers.scale.threads import process_cpu_seconds

    if not sys.platform.startswith("linux"):
        assert process_cpu_seconds([1]) is None
        return
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass\n"
                              "print('done', flush=True)\ntime.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"
        used = process_cpu_seconds([child.pid])
        assert 0.25 <= used < 5.0  # the kernel counts in ticks (10 ms)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert process_cpu_seconds([child.pid]) is None  # reaped: no /proc entry
