"""One rank of a test's 2-process learner, started by `tests/trainers/test_distributed.py` the way torchrun starts
ranks (RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment; the trainer joins the group itself).

    python -m tests.trainers.dist_worker MODE CONFIG_JSON OUT_DIR [BATCH_DIR K]

MODE: `updates` (K updates on this rank's fixed batches, then write the loss state), `train` (a normal run),
`die` (rank 1 exits hard in its third epoch; rank 0 must stop with a clear error), `hang` (rank 1
sleeps $HANG_S seconds in its third epoch, then exits; rank 0 must time out first).
"""
from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
import traceback

import torch
from tensordict import TensorDict

from torchrl_amago.envs import TMaze, make_amago_env
from torchrl_amago.trainers import AMAGOTrainer, TrainConfig

HORIZON = 4


def make_env(n: int):
    return make_amago_env(TMaze(n, corridor_length=HORIZON, passive=True, penalty=-1.0 / (HORIZON + 1)))


class FixedBatches:
    """Stands in for the replay's sampler: returns the given batches in order."""

    def __init__(self, batches):
        self.batches, self.i = list(batches), 0

    def sample(self):
        self.i += 1
        return self.batches[self.i - 1]

    def num_trials(self) -> int:
        return 10**6


def batch_files(batch_dir: str, rank: int, k: int) -> list[str]:
    return [os.path.join(batch_dir, f"rank{rank}_step{i}") for i in range(k)]


def loss_state(trainer) -> dict:
    return {k: v.detach().cpu().clone() for k, v in trainer.loss.state_dict().items()}


def main(argv: list[str]) -> int:
    mode, cfg_json, out_dir = argv[:3]
    # a rank still running after DUMP_S seconds prints every thread's stack (the test prints it when it kills us)
    faulthandler.dump_traceback_later(float(os.environ.get("DUMP_S", "150")), exit=False)
    torch.set_num_threads(1)
    cfg = TrainConfig(**json.loads(cfg_json))
    rank = int(os.environ["RANK"])
    os.makedirs(out_dir, exist_ok=True)
    try:
        tr = AMAGOTrainer(cfg, make_env, None if mode == "updates" else make_env)
        if mode == "updates":
            batch_dir, k = argv[3], int(argv[4])
            tr.sampler = FixedBatches(TensorDict.load_memmap(p).clone() for p in batch_files(batch_dir, rank, k))
            for _ in range(k):
                tr.learner.update()
            torch.save(loss_state(tr), os.path.join(out_dir, f"state_rank{rank}.pt"))
            tr.close()
        elif mode in ("train", "die", "hang"):
            if mode in ("die", "hang") and rank == 1:
                learn = tr.learner.learn

                def learn_then_die(n):
                    if tr.epoch == 2:
                        if mode == "hang":  # alive but silent: the others must time out, then it exits
                            time.sleep(float(os.environ.get("HANG_S", "120")))
                        os._exit(3)  # a hard crash: no cleanup, no goodbye to the process group
                    return learn(n)

                tr.learner.learn = learn_then_die
            summary = tr.run()
            with open(os.path.join(out_dir, f"summary_rank{rank}.json"), "w") as f:
                json.dump({"summary": summary, "grad_steps": tr.grad_steps, "env_steps": tr.env_steps}, f)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except Exception as e:  # the test reads the error class and message
        with open(os.path.join(out_dir, f"error_rank{rank}.txt"), "w") as f:
            f.write(f"{type(e).__name__}: {e}")
        traceback.print_exc()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
