"""benchmarks/learning_on_device.py: the per-run numbers come from the run's curve, and a tiny run works end to end
(on the CPU here; the script exists for `--device cuda`)."""
import json
import os
from pathlib import Path

from tests.examples.test_examples_smoke import load_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    return load_module(Path(ROOT) / "benchmarks" / "learning_on_device.py", "learning_on_device")


def test_run_summary_reads_the_curve():
    rows = [{"grad_steps": "40", "eval/return": "-0.9", "train/return": "-0.8"},
            {"grad_steps": "80", "train/return": "0.1"},
            {"grad_steps": "240", "eval/return": "1.0", "train/return": "0.3"},
            {"grad_steps": "440", "eval/return": "0.5", "train/return": ""}]
    got = _script().summarize_run(rows, solved=1.0)
    assert got == {"final_eval_return": 0.5, "last_train_return": 0.3, "first_solved_update": 240.0, "evals": 3}
    assert _script().summarize_run(rows, solved=None)["first_solved_update"] is None


def test_tiny_tmaze_run_on_cpu(tmp_path, capsys):
    tiny = ["--epochs", "2", "--grads_per_epoch", "2", "--eval_interval", "1", "--memory_size", "16",
            "--memory_layers", "1", "--n_heads", "2", "--parallel_envs", "2", "--eval_envs", "2"]
    rc = _script().main(["--device", "cpu", "--tasks", "tmaze10", "--seeds", "0", "--jobs", "1", "--threads", "1",
                         "--out", str(tmp_path), "--extra", *tiny])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert rc == 0 and len(lines) == 2
    run, summary = lines
    assert run["rc"] == 0 and run["evals"] == 3 and -1.0 <= run["final_eval_return"] <= 1.0
    assert os.path.exists(run["curve"]) and summary["finished"] == 1 and summary["solved"] in (0, 1)
