import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The tests run tiny ops: one thread is much faster than two on a busy 2-core box (no spinning OpenMP
    workers), and results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
