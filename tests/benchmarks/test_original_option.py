"""`--original PATH` of benchmarks/learner_update.py and benchmarks/encoder_step.py (benchmarks/original_amago.py):
the original AMAGO is never installed here, so these tests check the loading path and its errors, not timings."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_original_amago():
    spec = importlib.util.spec_from_file_location("original_amago", ROOT / "benchmarks" / "original_amago.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_missing_checkout_is_an_error_naming_the_flag(tmp_path):
    mod = load_original_amago()
    with pytest.raises(ValueError, match=r"--original .*no amago/agent\.py"):
        mod.check_original_path(tmp_path / "nowhere")
    (tmp_path / "amago").mkdir()  # a folder without the agent module is not a checkout either
    with pytest.raises(ValueError, match="--original"):
        mod.OriginalWorker(str(tmp_path), seq_len=8, batch=2, threads=1)


def test_a_checkout_that_fails_to_import_is_an_error_naming_the_flag(tmp_path):
    (tmp_path / "amago").mkdir()
    (tmp_path / "amago" / "__init__.py").write_text("")
    (tmp_path / "amago" / "agent.py").write_text("raise ImportError('needs gin-config')\n")
    mod = load_original_amago()
    with pytest.raises(RuntimeError, match=r"--original .*failed to load: ImportError: needs gin-config"):
        mod.OriginalWorker(str(tmp_path), seq_len=8, batch=2, threads=1, python=sys.executable)


def test_the_benchmarks_offer_the_option():
    for script in ("learner_update.py", "encoder_step.py"):
        text = (ROOT / "benchmarks" / script).read_text()
        assert '"--original"' in text and '"--original-python"' in text and "run_vs_original(args)" in text
    learner = (ROOT / "benchmarks" / "learner_update.py").read_text()
    assert "ORIGINAL_UPDATES_PER_S" not in learner and "vs_original\"" not in learner  # no constant-based ratio
    assert "500 env steps/s" not in (ROOT / "benchmarks" / "rollout.py").read_text()


@pytest.mark.parametrize("script", ["learner_update.py", "encoder_step.py"])
def test_the_command_line_refuses_a_missing_checkout_without_a_traceback(script, tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--original", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 1
    assert f"{script}: error: --original {tmp_path / 'nowhere'}: no amago/agent.py" in out.stderr
    assert "Traceback" not in out.stderr


# a stand-in for the original's modules, just what the worker builds: an Agent whose forward records whether it ran
# under bf16 autocast (its Experiment casts the forward only when mixed_precision="bf16")
FAKE = {
    "amago/__init__.py": "",
    "amago/agent.py": """
import json, os, torch
class Agent(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.trainable_params = [self.w]
    def forward(self, batch, log_step=False):
        with open(os.environ["FAKE_AMAGO_LOG"], "a") as f:
            f.write(json.dumps({"autocast": torch.is_autocast_enabled("cpu"),
                                "dtype": str(torch.get_autocast_dtype("cpu"))}) + "\\n")
        return (self.w * 2).sum()
    def soft_sync_targets(self):
        pass
""",
    "amago/utils.py": "",
    "amago/loading.py": "from dataclasses import dataclass\nMAGIC_PAD_VAL = 4\n"
                        "@dataclass\nclass Batch:\n    obs: dict\n    rews: object\n",
    "amago/nets/__init__.py": "",
    "amago/nets/traj_encoders.py": "class TformerTrajEncoder:\n    pass\n",
    "amago/nets/transformer.py": "class VanillaAttention:\n    pass\n",
    "amago/nets/tstep_encoders.py": "class FFTstepEncoder:\n    pass\n",
}


@pytest.mark.parametrize("bf16", [False, True])
def test_the_worker_runs_the_originals_forward_in_the_precision_asked(tmp_path, monkeypatch, bf16):
    import json

    for rel, text in FAKE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    log = tmp_path / "forward.jsonl"
    monkeypatch.setenv("FAKE_AMAGO_LOG", str(log))
    worker = load_original_amago().OriginalWorker(str(tmp_path), seq_len=8, batch=4, threads=1,
                                                  python=sys.executable, bf16=bf16)
    try:
        assert worker.versions["bf16"] is bf16
        assert worker.warmup(2)["updates"] == 2
    finally:
        worker.close()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [{"autocast": bf16, "dtype": "torch.bfloat16"}] * 2
