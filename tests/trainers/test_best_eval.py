"""--final_eval best: ckpts/best.pt holds the weights the best periodic eval saw, survives a resume, and
the final eval can run them."""
import csv
import math

import pytest
import torch

from torchrl_amago.trainers import AMAGOTrainer, CheckpointError, NonFiniteError, TrainConfig
from torchrl_amago.trainers.run.best_eval import BestEval
from torchrl_amago.trainers.run.checkpoint import load_checkpoint

from .test_trainer import _make_env, _tiny_cfg


def _scripted(trainer, successes):
    """Replace `trainer.evaluate` by one that returns the next score of `successes` and keeps the weights it saw."""
    seen = []

    def evaluate(timesteps=None):
        seen.append({k: v.clone() for k, v in trainer.loss.state_dict().items()})
        x = successes[len(seen) - 1]
        return {"eval/return": x, "eval/success": x}

    trainer.evaluate = evaluate
    return seen


def _same_state(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _best_file(trainer):
    return load_checkpoint(trainer.checkpoints.path("best"), required=("loss", "best_eval"))


def test_best_pt_holds_the_weights_of_the_best_eval_and_the_final_eval_can_run_them(tmp_path):
    cfg = _tiny_cfg(tmp_path, epochs=6, eval_interval=1, final_eval="best")
    tr = AMAGOTrainer(cfg, _make_env, _make_env, success_threshold=0.5)
    seen = _scripted(tr, [0.2, 0.9, 0.5, 0.9, 0.3, 0.1, 0.0])  # the last one: the final eval
    tr.train()
    best = _best_file(tr)
    # the later of the two 0.9 evals (epoch 3: after 3 epochs of 2 updates), with the weights that eval saw
    assert best["best_eval"]["value"] == 0.9 and best["best_eval"]["metric"] == "eval/success"
    assert best["best_eval"]["counters"] == {"epoch": 3, "env_steps": 3 * 2 * 5, "grad_steps": 6}
    assert _same_state(best["loss"], seen[3])
    assert not _same_state(seen[3], seen[5])  # training went on after it
    summary = tr.finish()
    assert _same_state(seen[6], seen[3])  # the final eval ran the best weights
    assert summary["final_eval_weights"] == "best" and summary["best_eval_success"] == 0.9
    assert summary["best_grad_steps"] == 6 and summary["best_env_steps"] == 30
    with open(tr.logger.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["eval_best/success"] == "0.0" and rows[-1]["eval/success"] == ""  # the run's curve is its own
    tr.close()


def test_final_eval_both_runs_the_last_weights_then_the_best(tmp_path):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=3, eval_interval=1, final_eval="both"), _make_env, _make_env,
                      success_threshold=0.5)
    seen = _scripted(tr, [0.6, 0.3, 0.2, 0.25, 0.5])  # 3 periodic evals, then the last weights, then the best
    tr.train()
    last = {k: v.clone() for k, v in tr.loss.state_dict().items()}
    summary = tr.finish()
    assert _same_state(seen[3], last) and _same_state(seen[4], seen[0]) and not _same_state(seen[0], last)
    assert summary["eval_success"] == 0.25 and summary["eval_best_success"] == 0.5
    assert summary["best_eval_success"] == 0.6 and summary["best_grad_steps"] == 0
    with open(tr.logger.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert (rows[-2]["eval/success"], rows[-2]["eval_best/success"]) == ("0.25", "")
    assert (rows[-1]["eval/success"], rows[-1]["eval_best/success"]) == ("", "0.5")
    tr.close()


def test_real_evals_pick_the_highest_return_and_last_weights_by_default(tmp_path):
    torch.manual_seed(0)
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=5, eval_interval=1), _make_env, _make_env)
    tr.train()
    with open(tr.logger.csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r["eval/return"]]
    returns = [float(r["eval/return"]) for r in rows]
    last_best = max(i for i, r in enumerate(returns) if r == max(returns))
    best = _best_file(tr)
    assert best["best_eval"]["metric"] == "eval/return" and best["best_eval"]["value"] == pytest.approx(max(returns))
    # a row is logged at the end of its epoch; its eval ran at the start, on the weights of the epochs before
    counters = best["best_eval"]["counters"]
    assert counters["epoch"] == int(float(rows[last_best]["epoch"])) and counters["grad_steps"] == 2 * counters["epoch"]
    last = {k: v.clone() for k, v in tr.loss.state_dict().items()}
    summary = tr.finish()
    assert summary["final_eval_weights"] == "last" and _same_state(tr.loss.state_dict(), last)
    assert summary["best_eval_return"] == pytest.approx(max(returns))
    tr.close()


def test_a_resumed_run_compares_against_the_best_before_the_stop(tmp_path):
    cfg = _tiny_cfg(tmp_path, epochs=3, eval_interval=1)
    a = AMAGOTrainer(cfg, _make_env, _make_env, success_threshold=0.5)
    seen_a = _scripted(a, [0.2, 0.9, 0.5])
    a.train()
    a.close()
    b = AMAGOTrainer(cfg.replace(epochs=5), _make_env, _make_env, success_threshold=0.5)
    seen_b = _scripted(b, [0.6, 0.95])
    assert b.resume()
    assert b.best_eval.value == 0.9 and b.best_eval.counters["epoch"] == 1
    b.train(epochs=4)  # epoch 3's eval (0.6) is below the best of the first process: best.pt is unchanged
    assert _best_file(b)["best_eval"]["value"] == 0.9 and _same_state(_best_file(b)["loss"], seen_a[1])
    b.train()  # epoch 4: 0.95
    assert _best_file(b)["best_eval"]["value"] == 0.95 and _same_state(_best_file(b)["loss"], seen_b[1])
    b.close()


def test_non_finite_weights_never_replace_the_best_file(tmp_path):
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=1, eval_interval=1), _make_env, _make_env, success_threshold=0.5)
    _scripted(tr, [0.5])
    tr.keep_if_best({"eval/success": 0.4, "eval/return": 0.4})
    kept = _best_file(tr)
    with torch.no_grad():
        next(tr.loss.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteError, match="best.pt"):
        tr.keep_if_best({"eval/success": 0.9, "eval/return": 0.9})
    assert _same_state(_best_file(tr)["loss"], kept["loss"]) and _best_file(tr)["best_eval"]["value"] == 0.4
    assert tr.best_eval.value == 0.4
    tr.close()


def test_bad_settings_name_the_flags(tmp_path):
    with pytest.raises(ValueError, match="--final_eval best .* --eval_interval > 0"):
        TrainConfig(final_eval="best", eval_interval=0)
    with pytest.raises(ValueError, match="--final_eval="):
        TrainConfig(final_eval="first")
    tr = AMAGOTrainer(_tiny_cfg(tmp_path, epochs=1, eval_interval=1), _make_env, _make_env)
    with pytest.raises(CheckpointError, match="best.pt does not exist: it is written at the first periodic eval"):
        tr.load_best()
    tr.close()


def test_best_eval_record_ignores_missing_and_nonfinite_scores():
    best = BestEval("eval/success")
    assert not best.improved_by({}) and not best.improved_by({"eval/success": math.nan})
    assert best.improved_by({"eval/success": 0.0}) and best.summary() == {}
    best.record({"eval/success": 0.5}, {"epoch": 2, "env_steps": 10, "grad_steps": 4})
    assert best.improved_by({"eval/success": 0.5}) and not best.improved_by({"eval/success": 0.49})
    other = BestEval("eval/return")
    other.load_state(best.state())  # another metric: no record
    assert other.counters is None and other.value == -math.inf
