"""A tiny batched task env for MetaTrial tests: the task is redrawn at hard resets only (unless keep_task=False)."""
import torch
from tensordict import TensorDict
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase


class ToyTaskEnv(EnvBase):
    """obs = [task id, step in episode]; reward = step in episode (1, 2, ...); the episode ends after
    ``episode_len`` steps (terminated if ``terminate`` else truncated). ``reset(soft_reset=True)`` keeps the task
    when ``keep_task``."""

    batch_locked = True

    def __init__(self, num_envs=3, episode_len=3, terminate=True, keep_task=True, n_tasks=10_000):
        super().__init__(batch_size=torch.Size([num_envs]))
        B = self.batch_size
        self.episode_len, self.terminate, self.n_tasks = episode_len, terminate, n_tasks
        self.supports_soft_reset = keep_task
        self.observation_spec = Composite(observation=Unbounded((*B, 2)), shape=B)
        self.action_spec = Categorical(2, shape=B, dtype=torch.int64)
        self.reward_spec = Unbounded((*B, 1))
        self.done_spec = Composite({k: Categorical(2, (*B, 1), dtype=torch.bool)
                                    for k in ("done", "terminated", "truncated")}, shape=B)
        self.task = torch.zeros(B)
        self.t = torch.zeros(B)
        self.soft_resets = 0
        self.gen = torch.Generator().manual_seed(0)

    def _obs(self):
        return torch.stack([self.task, self.t], -1)

    def _reset(self, tensordict=None, soft_reset=False, **kw):
        B = self.batch_size
        mask = tensordict["_reset"].view(B) if tensordict is not None and "_reset" in tensordict.keys() \
            else torch.ones(B, dtype=torch.bool)
        self.soft_resets += int(soft_reset)
        if not soft_reset:
            self.task = torch.where(mask, torch.randint(self.n_tasks, B, generator=self.gen).float(), self.task)
        self.t = torch.where(mask, 0.0, self.t)
        return TensorDict(observation=self._obs(), batch_size=B)

    def _step(self, td):
        self.t = self.t + 1
        end = (self.t >= self.episode_len).unsqueeze(-1)
        z = torch.zeros_like(end)
        return TensorDict(observation=self._obs(), reward=self.t.clone().unsqueeze(-1), done=end.clone(),
                          terminated=end.clone() if self.terminate else z, truncated=z if self.terminate else end,
                          batch_size=self.batch_size)

    def _set_seed(self, seed):
        self.gen.manual_seed(seed)
