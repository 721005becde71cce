"""A user's workflow past the demo: train longer with the same command, evaluate and act with a saved run, start a
new run from another's config, and the errors that name the fix."""
import csv
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.envs import GymEnv, SerialEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tests.examples.test_examples_smoke import TINY, load_example
from torchrl_amago.envs import TMaze, check_amago_env, make_amago_env
from torchrl_amago.envs.libs import SameTaskGymWrapper
from torchrl_amago.modules import AMAGOPolicy
from torchrl_amago.trainers import AMAGOTrainer, CheckpointError, load_run
from torchrl_amago.trainers.logging import ProgressBar

from .test_trainer import _make_env, _tiny_cfg

TMAZE = TINY + ["--horizon", "4", "--timesteps_per_epoch", "5", "--eval_interval", "1"]
#: what 04_tmaze.py --horizon 4 tells its trainer: the run's identity besides its config
TMAZE_SETTINGS = dict(env_name="TMaze-4", success_threshold=0.5, rollout_horizon=5,
                      settings={"script": "04_tmaze.py", "horizon": 4})


def _rows(run):
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_same_command_with_more_epochs_continues_the_run(tmp_path):
    """04_tmaze derives --eps_steps_anneal from --epochs (all of the run's steps): extending the run keeps the
    recorded value, as every flag not typed, and the metrics, replay and counters go on."""
    argv = TMAZE + ["--buffer_dir", str(tmp_path), "--run_name", "t"]
    first = load_example("04_tmaze").main(argv)
    recorded = json.loads((tmp_path / "t" / "config.json").read_text())["config"]
    assert recorded["eps_steps_anneal"] == 2 * 5  # share_of_run(1) of 2 epochs x 5 steps
    longer = load_example("04_tmaze").main(argv + ["--epochs", "3"])
    assert first["env_steps"] == 2 * 2 * 5 and longer["env_steps"] == 3 * 2 * 5
    assert longer["grad_steps"] == 3 * 2
    assert json.loads((tmp_path / "t" / "config.json").read_text())["config"]["eps_steps_anneal"] == 10
    assert [r["epoch"] for r in _rows(tmp_path / "t")] == ["0.0", "1.0", "2.0", ""]  # one final row, at the end


def test_a_typed_change_that_cannot_apply_is_refused_naming_the_runs_value(tmp_path):
    argv = TMAZE + ["--buffer_dir", str(tmp_path), "--run_name", "t"]
    load_example("04_tmaze").main(argv)
    with pytest.raises(CheckpointError, match=r"--memory_size: checkpoint 16 -> now 32 \(the run's value: "
                                              r"--memory_size 16\)"):
        load_example("04_tmaze").main(argv + ["--memory_size", "32", "--epochs", "3"])


def test_eval_only_reads_the_run_and_load_run_acts_with_the_same_weights(tmp_path):
    argv = TMAZE + ["--buffer_dir", str(tmp_path), "--run_name", "t"]
    summary = load_example("04_tmaze").main(argv)
    best = load_example("04_tmaze").main(["--buffer_dir", str(tmp_path), "--run_name", "t", "--eval_only", "best"])
    assert best["eval_weights"] == "best" and best["grad_steps"] == summary["best_grad_steps"]
    run = load_run(tmp_path / "t")
    assert run.settings["horizon"] == 4 and run.config.memory_size == 16 and run.settings["script"] == "04_tmaze.py"
    env = make_amago_env(TMaze(3, corridor_length=4, passive=True, penalty=-1.0 / 5))
    policy = run.policy(env, weights="latest")
    assert isinstance(policy, AMAGOPolicy) and not policy.training
    # the same actions as a trainer that resumed the run's latest checkpoint
    tr = AMAGOTrainer(run.config.replace(epochs=2), _make_env_4, _make_env_4, **TMAZE_SETTINGS)
    assert tr.resume()
    ref = tr.policy.fresh_copy().eval()
    env.set_seed(3)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        a = env.rollout(10, policy, break_when_any_done=False)
        env.set_seed(3)
        b = env.rollout(10, ref, break_when_any_done=False)
    tr.close()
    assert torch.equal(a["action"], b["action"])
    # an env wrapped otherwise than the run's: the keys that differ are named, not a shape mismatch of a weight
    with pytest.raises(ValueError, match=r"not the ones the run .* was trained on .*action_counts: trained on None, "
                                         r"this env \[4\]"):
        run.policy(make_amago_env(TMaze(3, corridor_length=4, passive=True), action_counts=True))
    # evaluating from another script than the one that trained the run: allowed, nothing is written
    other = AMAGOTrainer(run.config.replace(eval_only="best"), _make_env_4, _make_env_4,
                         **{**TMAZE_SETTINGS, "settings": {"script": "evaluate.py", "horizon": 4}})
    assert other.run()["eval_weights"] == "best"


def _make_env_4(n):
    return make_amago_env(TMaze(n, corridor_length=4, passive=True, penalty=-1.0 / 5))


def test_eval_only_of_a_folder_without_a_run_says_so(tmp_path):
    with pytest.raises(SystemExit):  # argparse: --eval_only takes best or latest
        load_example("04_tmaze").main(["--buffer_dir", str(tmp_path), "--run_name", "t", "--eval_only", "first"])
    with pytest.raises(CheckpointError, match="holds no run .*--eval_only evaluates a run folder"):
        load_example("04_tmaze").main(["--buffer_dir", str(tmp_path), "--run_name", "none", "--eval_only", "best"])


def test_a_new_run_starts_from_another_runs_config(tmp_path):
    """--config <run>/config.json: the other run's flags, its example's own flags too (--horizon 3 here, not the
    default 20); typed flags win; a plain JSON file may hold both kinds; an unknown name is refused."""
    argv = TINY + ["--horizon", "3", "--timesteps_per_epoch", "4", "--eval_interval", "1"]
    load_example("04_tmaze").main(argv + ["--buffer_dir", str(tmp_path), "--run_name", "a", "--memory_size", "8"])
    other = load_example("04_tmaze").main(["--buffer_dir", str(tmp_path), "--run_name", "b", "--config",
                                           str(tmp_path / "a" / "config.json"), "--epochs", "1"])
    a = json.loads((tmp_path / "a" / "config.json").read_text())
    b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert {k for k in a["config"] if a["config"][k] != b["config"][k]} == {"run_name", "epochs"}
    assert b["config"]["memory_size"] == 8 and b["settings"]["horizon"] == 3 and other["grad_steps"] == 1 * 2
    assert json.loads((tmp_path / "b" / "run.json").read_text())["settings"]["horizon"] == 3
    (tmp_path / "plain.json").write_text(json.dumps({**a["config"], "horizon": 3, "run_name": "ignored"}))
    load_example("04_tmaze").main(["--buffer_dir", str(tmp_path), "--run_name", "c", "--config",
                                   str(tmp_path / "plain.json"), "--epochs", "1"])
    assert json.loads((tmp_path / "c" / "run.json").read_text())["settings"]["horizon"] == 3
    (tmp_path / "bad.json").write_text(json.dumps({"memory_size": 8, "no_such_flag": 1}))
    with pytest.raises(SystemExit):
        load_example("04_tmaze").main(["--buffer_dir", str(tmp_path), "--run_name", "d", "--config",
                                       str(tmp_path / "bad.json")])


def test_extending_a_run_says_which_schedules_end_early_and_epsilon_may_be_stretched(tmp_path):
    argv = TMAZE + ["--buffer_dir", str(tmp_path), "--run_name", "t"]
    load_example("04_tmaze").main(argv)  # epsilon over the 2 epochs' 10 steps (share_of_run(1))
    with pytest.warns(UserWarning, match=r"started for 2 epochs and now goes on to 4: epsilon reaches --eps_end after "
                                         r"--eps_steps_anneal 10 batched steps \(epoch 2\).*Type --eps_steps_anneal"):
        load_example("04_tmaze").main(argv + ["--epochs", "4"])
    longer = load_example("04_tmaze").main(argv + ["--epochs", "5", "--eps_steps_anneal", "25"])  # may change
    assert longer["grad_steps"] == 5 * 2
    assert json.loads((tmp_path / "t" / "config.json").read_text())["config"]["eps_steps_anneal"] == 25


def test_a_refused_run_is_one_line_and_exit_status_2(tmp_path, capsys):
    from torchrl_amago.trainers import run_main

    with pytest.raises(SystemExit) as e:
        run_main(lambda: load_example("04_tmaze").main(["--buffer_dir", str(tmp_path), "--run_name", "none",
                                                          "--eval_only", "best"]))
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: RunDirError: ") 
    with pytest.raises(ZeroDivisionError):  # anything else keeps its traceback
        run_main(lambda: 1 / 0)


def test_a_missing_wrapper_names_make_amago_env(tmp_path):
    with pytest.raises(ValueError, match=r"training env .* wrap it with torchrl_amago.envs.make_amago_env"):
        AMAGOTrainer(_tiny_cfg(tmp_path, eval_interval=0), lambda n: TMaze(n, corridor_length=4), None)
    with pytest.raises(ValueError, match=r"check_amago_env .* wrap it with torchrl_amago.envs.make_amago_env"):
        check_amago_env(TMaze(2, corridor_length=4))
    policy = load_run_free_policy()
    with pytest.raises(KeyError, match="wrap the env with torchrl_amago.envs.make_amago_env"):
        TMaze(2, corridor_length=4).rollout(2, policy)


def load_run_free_policy():
    """A fresh policy for T-Maze's specs."""
    from torchrl_amago.trainers import build_agent_modules, build_policy

    env = _make_env(2)
    return build_policy(build_agent_modules(_tiny_cfg("unused"), env.observation_spec, env.action_spec))


class _Goal(gym.Env):
    """One step per episode; the task is `goal`, drawn from `self.np_random` or (bad) from `np.random`."""

    def __init__(self, bad: bool):
        self.bad = bad
        self.observation_space, self.action_space = gym.spaces.Box(0, 1, (1,), np.float32), gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.goal = int(np.random.randint(0, 1000)) if self.bad else int(self.np_random.integers(0, 1000))
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, {}


@pytest.mark.parametrize("bad", [False, True])
def test_a_task_drawn_outside_the_envs_generator_is_caught(bad):
    env = make_amago_env(SerialEnv(2, lambda: SameTaskGymWrapper(_Goal(bad))), k_episodes=3, same_task=True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        env.rollout(6, break_when_any_done=False)
    hits = [str(w.message) for w in seen if "differ from the trial's first episode" in str(w.message)]
    assert (hits and "['goal']" in hits[0] and "self.np_random" in hits[0]) if bad else not hits


def test_same_task_gym_env_still_takes_a_registered_id():
    from torchrl_amago.envs.libs import SameTaskGymEnv

    assert issubclass(SameTaskGymEnv, GymEnv)
    env = make_amago_env(SameTaskGymEnv("CartPole-v1"), k_episodes=2, same_task=True)
    assert env.rollout(5)["observation"].shape[-1] == 4


def test_the_progress_bar_shows_the_last_eval_per_attempt():
    bar = ProgressBar("x", 0, 3, shown=False)
    bar.update({"eval/episode_0_return": 0.4, "eval/episode_1_return": 0.8, "eval/return": 1.2}, 10, 2)
    bar.update({"train/return": 0.1}, 20, 4)  # no eval this epoch: the last one stays
    assert bar.last_eval == {"eval": "0.40/0.80"}
    bar.update({"eval/return": 0.5, "eval/success": 1.0}, 30, 6)
    assert bar.last_eval == {"eval": "0.5", "success": "1.00"}
    bar.close()


def test_resumed_schedules_keep_the_length_the_run_was_planned_with(tmp_path):
    cfg = _tiny_cfg(tmp_path, lr_decay="cosine", epochs=2, lr_warmup_steps=0)
    a = AMAGOTrainer(cfg, _make_env, _make_env)
    a.train()
    a.save()
    lr_end = a.learner.optimizer.param_groups[0]["lr"]
    a.close()
    b = AMAGOTrainer(cfg.replace(epochs=4), _make_env, _make_env)
    assert b.learner.planned_updates == 8 and b.resume() and b.learner.planned_updates == 4
    assert b.learner.optimizer.param_groups[0]["lr"] == pytest.approx(lr_end)  # decayed to its floor: it stays
    assert lr_end == pytest.approx(cfg.learning_rate * 0.1)
    b.close()
