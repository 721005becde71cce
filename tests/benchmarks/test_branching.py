"""benchmarks/branching.py: branch points (--branch_every, a post-epoch hook) and branched runs (--branch_from,
benchmarks/branch_run.py)."""
import json
import os
from pathlib import Path

import pytest
import torch

from torchrl_amago.trainers import AMAGOTrainer, CheckpointError
from torchrl_amago.trainers.run.checkpoint import load_checkpoint

from ..examples.test_examples_smoke import load_module
from ..trainers.test_trainer import _make_env, _tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
B = load_module(Path(ROOT) / "benchmarks" / "branching.py", "branching")
branch_point_dir, copy_sparse, branching = B.branch_point_dir, B.copy_sparse, B.branching


def test_copy_sparse_keeps_bytes_and_holes(tmp_path):
    src, dst = tmp_path / "a.memmap", tmp_path / "b.memmap"
    with open(src, "wb") as f:  # 8 MiB file: 3 bytes at the start and 5 at 6 MiB, the rest never written
        f.write(b"abc")
        f.seek(6 << 20)
        f.write(b"defgh")
        f.truncate(8 << 20)
    copy_sparse(str(src), str(dst))
    assert src.read_bytes() == dst.read_bytes()
    assert os.stat(dst).st_blocks * 512 < (1 << 20)  # two written 64 KiB chunks, not 8 MiB


def _source_run(tmp_path, epochs=3):
    with branching(branch_every=1):
        tr = AMAGOTrainer(_tiny_cfg(tmp_path, run_name="src", epochs=epochs), _make_env, _make_env)
    tr.train()
    tr.close()
    return tr


def test_branch_point_is_a_snapshot_of_that_epoch(tmp_path):
    tr = _source_run(tmp_path)
    run_dir = tr.run_dir
    assert sorted(os.listdir(os.path.join(run_dir, "branches"))) == ["epoch_1", "epoch_2", "epoch_3"]
    bp = load_checkpoint(os.path.join(branch_point_dir(run_dir, 1), "latest.pt"))
    # 2 envs x 5 steps per epoch: the copy holds epoch 1's replay although the run went on writing the same memmaps
    assert bp["counters"] == {"epoch": 1, "env_steps": 10, "grad_steps": bp["counters"]["grad_steps"]}
    with open(os.path.join(branch_point_dir(run_dir, 1), "metrics.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + 1  # header + epoch 0's row


def test_branch_from_starts_with_the_branch_point_under_new_loss_settings(tmp_path):
    tr = _source_run(tmp_path)
    bp_dir = branch_point_dir(tr.run_dir, 1)
    bp = load_checkpoint(os.path.join(bp_dir, "latest.pt"))
    cfg = _tiny_cfg(tmp_path, run_name="branched", n_step=3, learning_rate=3e-4, epochs=3, cql_coeff=0.2)
    with branching(branch_from=bp_dir):
        b = AMAGOTrainer(cfg, _make_env, _make_env)  # n_step, cql_coeff: a plain resume refuses them, a branch takes them
    assert b.resume()
    assert (b.epoch, b.env_steps, b.grad_steps) == (1, 10, bp["counters"]["grad_steps"])
    for k, v in bp["loss"].items():
        assert torch.equal(b.loss.state_dict()[k], v), k
    assert b.loss.n_step == 3 and b.learner.optimizer.param_groups[0]["initial_lr"] == 3e-4
    assert len(b.replay) == 10  # the branch point's replay, not the source's 30 steps
    assert [r["epoch"] for r in b.logger.records] == [0.0]  # the source's rows before the branch epoch
    b.train()
    b.close()
    saved = load_checkpoint(b.checkpoints.path("latest"))
    stored = saved["config"]
    with open(os.path.join(b.run_dir, B.BRANCHED_FROM)) as f:
        assert stored["n_step"] == 3 and json.load(f)["branch_from"] == bp_dir
    assert stored["cql_coeff"] == 0.2 and stored["cql_ramp"] is None and b.loss.cql_coeff == 0.2
    assert b.epoch == 3 and len(b.replay) == 30
    assert os.path.exists(os.path.join(bp_dir, "latest.pt"))  # the branch point is left as it was
    with branching(branch_from=bp_dir):  # a stopped branched run resumes its own
        again = AMAGOTrainer(cfg.replace(epochs=4), _make_env, _make_env)
    assert again.resume() and again.epoch == 3
    again.close()


def test_branch_errors_name_the_problem(tmp_path):
    tr = _source_run(tmp_path, epochs=1)
    bp_dir = branch_point_dir(tr.run_dir, 1)
    with pytest.raises(CheckpointError, match="not a branch point"), branching(branch_from=str(tmp_path / "nope")):
        AMAGOTrainer(_tiny_cfg(tmp_path, run_name="x"), _make_env, _make_env)
    with pytest.raises(ValueError, match="its own --run_name"), branching(branch_from=bp_dir):
        AMAGOTrainer(_tiny_cfg(tmp_path, run_name="src"), _make_env, _make_env)
    with branching(branch_from=bp_dir):
        wider = AMAGOTrainer(_tiny_cfg(tmp_path, run_name="wider", memory_size=32), _make_env, _make_env)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        wider.resume()
    wider.close()
    with pytest.raises(ValueError, match="--branch_every must be >= 0"), branching(branch_every=-1):
        pass


@pytest.mark.timeout(300)
def test_branch_run_prints_variants_side_by_side(tmp_path, capsys):
    common = ["--horizon", "4", "--epochs", "3", "--grads_per_epoch", "4", "--eval_interval", "1", "--eval_envs", "2",
              "--parallel_envs", "2", "--memory_size", "16", "--memory_layers", "1", "--n_heads", "2",
              "--tstep_hidden", "16", "--tstep_out", "16", "--actor_hidden", "16", "--critic_hidden", "16",
              "--dset_max_size", "2000", "--num_threads", "1", "--batch_size", "4"]
    branch_run = load_module(Path(ROOT) / "benchmarks" / "branch_run.py", "branch_run")
    branch_run.main(["--branch_every", "1", "--example", "04_tmaze", "--", *common, "--run_name", "src", "--buffer_dir",
                     str(tmp_path), "--no-progress_bar"])
    capsys.readouterr()
    branch_run.main([str(tmp_path / "src" / "branches" / "epoch_1"), "--example", "04_tmaze", "--variant", "same=",
                     "--variant", "lr=--learning_rate 5e-4", "--keys", "train-update/lr", "--jobs", "2", "--", *common])
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    by = {ln.get("variant"): ln for ln in lines}
    assert set(by) == {"source", "same", "lr", None}
    assert by["same"]["returncode"] == 0 and by["lr"]["returncode"] == 0
    assert "--learning_rate 0.0001 -> 0.0005" in by["lr"]["changes"]
    assert "learning_rate" not in by["same"]["changes"]
    # epochs 1 and 2 after the branch (epoch 0's row is the source's): the warm-up schedule's lr, 5x for "lr"
    lr_same, lr_lr = by["same"]["curve"]["train-update/lr"][:2], by["lr"]["curve"]["train-update/lr"][:2]
    assert lr_lr == pytest.approx([5 * v for v in lr_same], rel=1e-3) and lr_same[0] > 0
    assert by["source"]["curve"]["train-update/lr"][:2] == lr_same
    table = by[None]
    assert table["grad_steps"] == sorted(set(table["grad_steps"]))
    assert set(table["train-update/lr"]) == {"source", "same", "lr"}


def test_branch_with_target_encoders_starts_its_targets_from_the_online_encoders(tmp_path):
    tr = _source_run(tmp_path, epochs=1)  # no copy: target_encoders is off
    bp_dir = branch_point_dir(tr.run_dir, 1)
    online = load_checkpoint(os.path.join(bp_dir, "latest.pt"))["loss"]
    cfg = _tiny_cfg(tmp_path, run_name="tb", target_encoders=True, epochs=2)
    with branching(branch_from=bp_dir):
        b = AMAGOTrainer(cfg, _make_env, _make_env)
    assert b.resume()
    state = b.loss.state_dict()
    copies = [k for k in state if k.startswith("target_backbone_params.")]
    assert copies and all(torch.equal(state[k], online[k[len("target_backbone_params."):]]) for k in copies)
    b.train()  # the trainer's SoftUpdate moves them from here
    assert any(not torch.equal(b.loss.state_dict()[k], online[k[len("target_backbone_params."):]]) for k in copies)
    b.close()
