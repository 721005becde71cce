"""Build the AMAGO modules, loss, policy and exploration from a `TrainConfig` and env specs."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..envs import BilevelEpsilonGreedy, EpsilonGreedy
from ..modules.count_heads import CountActorHead, CountDiscreteCritic, CountsBesideEmbedding, CountsPassThrough
from ..modules.heads import ActorHead, ContinuousCritic, DiscreteCritic, TwoHotCritic
from ..modules.policy import AMAGOPolicy
from ..modules.timestep import CNNTimestepEncoder, MLPTimestepEncoder
from ..modules.trajectory import encoder_emb_dim, make_trajectory_encoder
from ..objectives import AMAGOLoss
from ..spaces import ActionSpace, action_space_from_spec
from .config import TrainConfig, sections


@dataclass
class AgentModules:
    """The four trainable pieces of an AMAGO agent plus its action space."""

    timestep_encoder: nn.Module
    trajectory_encoder: nn.Module
    actor: nn.Module
    critic: nn.Module
    action_space: ActionSpace


def build_timestep_encoder(cfg: TrainConfig, observation_spec, action_spec, image_key: str | None = None,
                           **kw) -> nn.Module:
    """An MLP timestep encoder, or a CNN on `image_key` (default `cfg.image_key`); `kw` override."""
    image_key = image_key or cfg.image_key
    if image_key is not None:
        kw = dict(dict(cnn_type=cfg.cnn, img_features=cfg.tstep_hidden, d_output=cfg.tstep_out,
                       drqv2_aug=cfg.drqv2_aug), **kw)
        return CNNTimestepEncoder.from_specs(observation_spec, action_spec, obs_keys=[image_key], **kw)
    return MLPTimestepEncoder.from_specs(
        observation_spec, action_spec, obs_keys=cfg.obs_keys, n_layers=cfg.tstep_layers, d_hidden=cfg.tstep_hidden,
        d_output=cfg.tstep_out, normalize_inputs=cfg.tstep_normalize_inputs, **kw)


def build_trajectory_encoder(cfg: TrainConfig, input_dim: int) -> nn.Module:
    """The configured trajectory encoder for `input_dim`-wide timestep embeddings (a plain tensor module)."""
    kw = {}
    if cfg.traj_encoder == "transformer":
        kw = dict(n_heads=cfg.n_heads, d_ff=4 * cfg.memory_size, pos_emb=cfg.pos_emb, dropout_ff=cfg.dropout,
                  dropout_emb=cfg.dropout)
        if cfg.pos_emb == "learnable":
            if cfg.max_time_idx is None:
                raise ValueError("--pos_emb learnable needs --max_time_idx (longest trial length in steps)")
            kw["max_time_idx"] = cfg.max_time_idx
    return make_trajectory_encoder(cfg.traj_encoder, input_dim=input_dim, max_seq_len=cfg.max_seq_len,
                                   d_model=cfg.memory_size, n_layers=cfg.memory_layers, **kw)


def build_heads(cfg: TrainConfig, state_dim: int, action_space: ActionSpace) -> tuple[nn.Module, nn.Module]:
    """(actor, critic) for the config's gammas and action space (`--agent_type`, `--count_heads`)."""
    gammas = torch.tensor(cfg.gammas, dtype=torch.float32)
    actor_cls, critic_cls = (CountActorHead, CountDiscreteCritic) if cfg.count_heads else (ActorHead, DiscreteCritic)
    actor = actor_cls(state_dim, action_space, num_gammas=len(gammas), d_hidden=cfg.actor_hidden,
                      continuous_dist=cfg.continuous_dist, discrete_clip=tuple(cfg.discrete_clip))
    if cfg.agent_type == "multitask":
        critic = TwoHotCritic(state_dim, action_space.dim, gammas, num_critics=cfg.num_critics,
                              d_hidden=cfg.critic_hidden, num_bins=cfg.two_hot_bins,
                              min_return=cfg.two_hot_range[0], max_return=cfg.two_hot_range[1])
    elif action_space.discrete:
        critic = critic_cls(state_dim, action_space.dim, num_gammas=len(gammas), num_critics=cfg.num_critics,
                            d_hidden=cfg.critic_hidden)
    else:
        critic = ContinuousCritic(state_dim, action_space.dim, gammas, num_critics=cfg.num_critics,
                                  d_hidden=cfg.critic_hidden)
    return actor, critic


TimestepEncoderFactory = Callable[[object, object], nn.Module]  # (observation_spec, action_spec) -> module


def build_agent_modules(cfg: TrainConfig, observation_spec, action_spec,
                        timestep_encoder: nn.Module | TimestepEncoderFactory | None = None) -> AgentModules:
    """The configured modules for an env; `timestep_encoder`: a module, or a factory of the specs."""
    action_space = action_space_from_spec(action_spec)
    if cfg.count_heads and (not action_space.discrete or cfg.agent_type == "multitask"):
        raise ValueError("--count_heads needs discrete actions and --agent_type agent (a per-action critic); "
                         f"this run has {action_space.kind!r} actions and --agent_type {cfg.agent_type}")
    if timestep_encoder is None:
        tstep = build_timestep_encoder(cfg, observation_spec, action_spec)
    elif isinstance(timestep_encoder, nn.Module):
        tstep = timestep_encoder
    else:
        tstep = timestep_encoder(observation_spec, action_spec)
    traj = build_trajectory_encoder(cfg, tstep.emb_dim)
    actor, critic = build_heads(cfg, encoder_emb_dim(traj), action_space)
    if cfg.count_heads:  # the counts travel beside the embeddings to the heads
        tstep = CountsBesideEmbedding(tstep, action_space.dim)
        traj = CountsPassThrough(traj, action_space.dim)
    return AgentModules(tstep, traj, actor, critic, action_space)


def loss_options(cfg: TrainConfig) -> dict:
    """The loss section's fields that are `AMAGOLoss` arguments (unless None), and the discounts."""
    params = inspect.signature(AMAGOLoss).parameters
    kw = {f.name: getattr(cfg, f.name) for f in sections()["loss"]
          if f.name in params and getattr(cfg, f.name) is not None}
    kw["gammas"] = cfg.gammas
    kw.pop("gamma", None)  # the acting gamma is the last of `gammas`
    return kw


def build_loss(cfg: TrainConfig, m: AgentModules) -> AMAGOLoss:
    """`AMAGOLoss` (or `AMAGOLoss.multi_task` for `--agent_type multitask`) with the config's loss options."""
    kw = loss_options(cfg)
    if cfg.agent_type == "multitask":
        return AMAGOLoss.multi_task(m.timestep_encoder, m.trajectory_encoder, m.actor, m.critic,
                                    action_space=m.action_space, **kw)
    if m.action_space.kind == "multibinary":  # filtered BC only (as the original)
        kw.setdefault("online_coeff", 0.0)
    return AMAGOLoss(m.timestep_encoder, m.trajectory_encoder, m.actor, m.critic, action_space=m.action_space, **kw)


def build_policy(m: AgentModules) -> AMAGOPolicy:
    """The acting `AMAGOPolicy` sharing the modules' weights."""
    return AMAGOPolicy(m.timestep_encoder, m.trajectory_encoder, m.actor, m.action_space)


def build_exploration(cfg: TrainConfig, action_spec, rollout_horizon: int | None = None) -> nn.Module | None:
    """The configured exploration module rewriting `action` after the policy (bilevel needs `rollout_horizon`)."""
    if cfg.exploration == "none":
        return None
    if cfg.exploration == "bilevel":
        if rollout_horizon is None:
            raise ValueError("--exploration bilevel needs the trial horizon (rollout_horizon)")
        return BilevelEpsilonGreedy(action_spec, rollout_horizon=rollout_horizon, eps_start_start=cfg.eps_start,
                                    eps_start_end=cfg.eps_end, steps_anneal=cfg.eps_steps_anneal)
    return EpsilonGreedy(action_spec, eps_start=cfg.eps_start, eps_end=cfg.eps_end, steps_anneal=cfg.eps_steps_anneal)
