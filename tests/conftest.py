import os

import pytest
import torch

# Ray on this machine binds to loopback only: its single-machine mode (Ray's own switch, read when ray is first
# imported; without it a local instance listens on the machine's network address). Inherited by every subprocess.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(autouse=True)
def one_thread():
    """The tests run tiny ops: one thread is much faster than two on a busy 2-core box (no spinning OpenMP
    workers), and results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def restore_encoder_registry():
    """Encoders a test (or an executed doc block) registers do not outlive it: the registry is global, and the
    config's --traj_encoder choices (and the generated flag table) read it live."""
    from torchrl_amago.modules.trajectory import registry

    saved = dict(registry._REGISTRY), dict(registry.ENCODERS)
    yield
    for live, before in zip((registry._REGISTRY, registry.ENCODERS), saved):
        live.clear()
        live.update(before)


@pytest.fixture
def wandb_offline(monkeypatch):
    """wandb for real, offline; afterwards its service process is stopped and its environment entries are gone, so
    later tests (and the processes they start) do not inherit them."""
    wandb = pytest.importorskip("wandb")  # in the test extras
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield wandb
    wandb.teardown()
