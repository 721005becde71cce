"""A run folder, read-only: its config, its settings and its checked weights, and a policy that acts with them
(:func:`load_run`). Nothing in the folder is written, locked or unpickled."""
from __future__ import annotations

import os

import torch

from ..data.safe_files import UnsafeFileError, load_json
from ..envs import require_amago_keys, require_spec_shapes
from .config import CONFIG_FILE, CONFIG_FORMAT, IDENTITY_FILE, TrainConfig
from .factory import AgentModules, build_agent_modules, build_loss, build_policy
from .run.best_eval import BEST_REQUIRED
from .run.checkpoint import BEST_EVAL, CheckpointError, load_checkpoint, load_module_state
from .run.resume_config import current_config

WEIGHTS = ("best", "latest")


class SavedRun:
    """The run in `run_dir` (``<buffer_dir>/<run_name>``), read-only.

    Attributes:
        config: the run's `TrainConfig` (``config.json``; a run without one: its latest checkpoint's).
        settings: what the run was told about its env (``run.json``): the script, ``env_name``, ``rollout_horizon``,
            ``task_names``, ``success_threshold`` and the example's own flags (e.g. T-Maze's ``horizon``).
    """

    def __init__(self, run_dir: str):
        self.path = str(run_dir)
        if os.path.islink(self.path) or not os.path.isdir(self.path):
            raise FileNotFoundError(f"{self.path} is not a run folder (a folder <buffer_dir>/<run_name> written by "
                                    f"AMAGOTrainer)")
        self.identity = self._read(IDENTITY_FILE)
        if not (isinstance(self.identity, dict) and isinstance(self.identity.get("run_id"), str)
                and isinstance(self.identity.get("settings"), dict)):
            raise CheckpointError(f"{os.path.join(self.path, IDENTITY_FILE)} is not a run identity written by "
                                  f"torchrl_amago")
        self.settings = dict(self.identity["settings"])
        self._config: TrainConfig | None = None
        self.observations: dict | None = None  # the training env's observation shapes (config.json), once read

    def _read(self, name: str):
        path = os.path.join(self.path, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {self.path} holds no complete run")
        try:
            return load_json(path)
        except UnsafeFileError as e:
            raise CheckpointError(str(e)) from e

    @property
    def config(self) -> TrainConfig:
        if self._config is None:
            if os.path.exists(os.path.join(self.path, CONFIG_FILE)):
                stored, where = self._read(CONFIG_FILE), os.path.join(self.path, CONFIG_FILE)
                if not (isinstance(stored, dict) and stored.get("format") == CONFIG_FORMAT
                        and isinstance(stored.get("config"), dict)):
                    raise CheckpointError(f"{where} is not a config written by torchrl_amago (format "
                                          f"{CONFIG_FORMAT!r})")
                self.observations = stored.get("observations")
                stored = stored["config"]
            else:  # a run of an earlier release
                where = self.checkpoint_path("latest")
                stored = current_config(load_checkpoint(where), where)
            try:
                self._config = TrainConfig.from_dict(stored)
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{where}: the stored config is not valid today ({e})") from e
        return self._config

    def checkpoint_path(self, weights: str) -> str:
        """``ckpts/best.pt`` or ``ckpts/latest.pt``."""
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
        return os.path.join(self.path, "ckpts", f"{weights}.pt")

    def checkpoint(self, weights: str = "best", identity: dict | None = None) -> dict:
        """The `weights` checkpoint, read safely and checked to be this run's (`identity`: the run.json a caller
        already holds)."""
        path = self.checkpoint_path(weights)
        if not os.path.exists(path):
            hint = ("it is written at the first periodic eval of a run with --eval_interval > 0" if weights == "best"
                    else "it is written at the end of every epoch")
            raise CheckpointError(f"{path} does not exist: {hint}")
        ckpt = load_checkpoint(path, required=BEST_REQUIRED if weights == "best" else ("format", "loss", "counters"))
        run, run_id = ckpt.get("run"), (identity or self.identity)["run_id"]
        if not isinstance(run, dict) or run.get("run_id") != run_id:
            found = run.get("run_id") if isinstance(run, dict) else None
            raise CheckpointError(f"{path} belongs to run {found!r}, this run is {run_id!r} ({IDENTITY_FILE}): it "
                                  f"comes from another run, or was edited; refused")
        best = ckpt[BEST_EVAL] if weights == "best" else {}
        counters = (best.get("counters") if isinstance(best, dict) else None) if weights == "best" else ckpt["counters"]
        if not isinstance(counters, dict) or not all(isinstance(counters.get(k), int)
                                                     for k in ("epoch", "env_steps", "grad_steps")):
            raise CheckpointError(f"{path}: its counters must hold epoch, env_steps and grad_steps, got {counters!r}")
        return ckpt

    def load_weights(self, module: torch.nn.Module, weights: str = "best", identity: dict | None = None) -> dict:
        """Load the `weights` checkpoint's model state (checked: this run's, the module's keys and shapes, finite)
        into `module` (a loss holding the agent's modules); returns the counters it was saved at."""
        ckpt = self.checkpoint(weights, identity)
        load_module_state(module, ckpt["loss"], "model", self.checkpoint_path(weights))
        return ckpt[BEST_EVAL]["counters"] if weights == "best" else ckpt["counters"]

    def load_best(self, module: torch.nn.Module, identity: dict | None = None) -> dict:
        """Load ``best.pt`` into `module` (:meth:`load_weights`); returns its record (metric, value, counters)."""
        ckpt = self.checkpoint("best", identity)
        load_module_state(module, ckpt["loss"], "model", self.checkpoint_path("best"))
        return ckpt[BEST_EVAL]

    def modules(self, observation_spec, action_spec, weights: str = "best", timestep_encoder=None) -> AgentModules:
        """The agent's modules for these specs (`build_agent_modules` with the run's config), with the saved
        `weights` loaded."""
        modules = build_agent_modules(self.config, observation_spec, action_spec, timestep_encoder=timestep_encoder)
        self.load_weights(build_loss(self.config, modules), weights)
        return modules

    def policy(self, env, weights: str = "best", timestep_encoder=None):
        """An `AMAGOPolicy` with the saved `weights`, in eval mode, for `env` (an env wrapped by `make_amago_env`, as
        the run's were; a `--count_heads` run's env also writes ``action_counts``). It samples its actions unless
        acting under ``set_exploration_type(ExplorationType.DETERMINISTIC)``."""
        require_amago_keys(env, f"env given to load_run({self.path!r}).policy")
        if self.config is not None and self.observations is not None:  # config.json holds both
            require_spec_shapes(env, self.observations, f"the run {self.path}")
        return build_policy(self.modules(env.observation_spec, env.action_spec, weights, timestep_encoder)).eval()


def load_run(run_dir: str) -> SavedRun:
    """The run in `run_dir`, read-only: ``load_run(path).policy(env)`` acts with its best weights in `env`;
    ``.config`` and ``.settings`` say how it was trained."""
    return SavedRun(run_dir)
