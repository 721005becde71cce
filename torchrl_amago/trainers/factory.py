"""Build the AMAGO modules, loss, acting policy and exploration from a `TrainConfig` and env specs.

These are the only places where config flags become constructor arguments; a user who wants a custom
encoder builds the modules themselves and passes them to `AMAGOTrainer(modules=...)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..envs import BilevelEpsilonGreedy, EpsilonGreedy
from ..modules.heads import ActorHead, ContinuousCritic, DiscreteCritic, TwoHotCritic
from ..modules.policy import AMAGOPolicy
from ..modules.timestep import CNNTimestepEncoder, MLPTimestepEncoder
from ..modules.trajectory import encoder_emb_dim, make_trajectory_encoder
from ..objectives import AMAGOLoss
from ..spaces import ActionSpace, action_space_from_spec
from .config import TrainConfig


@dataclass
class AgentModules:
    """The four trainable pieces of an AMAGO agent plus its action space."""

    timestep_encoder: nn.Module
    trajectory_encoder: nn.Module
    actor: nn.Module
    critic: nn.Module
    action_space: ActionSpace


def _single_env_spec(spec):
    """Strip batch dims from a (batched) env spec."""
    return spec[(0,) * len(spec.shape)] if len(spec.shape) else spec


def build_timestep_encoder(cfg: TrainConfig, observation_spec, action_spec, image_key: str | None = None,
                           **kw) -> nn.Module:
    if image_key is not None:
        return CNNTimestepEncoder.from_specs(observation_spec, action_spec, obs_keys=[image_key], **kw)
    return MLPTimestepEncoder.from_specs(
        observation_spec, action_spec, obs_keys=cfg.obs_keys, n_layers=cfg.tstep_layers, d_hidden=cfg.tstep_hidden,
        d_output=cfg.tstep_out, normalize_inputs=cfg.tstep_normalize_inputs, **kw)


def build_trajectory_encoder(cfg: TrainConfig, input_dim: int) -> nn.Module:
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
    gammas = torch.tensor(cfg.gammas, dtype=torch.float32)
    actor = ActorHead(state_dim, action_space, num_gammas=len(gammas), d_hidden=cfg.actor_hidden,
                      continuous_dist=cfg.continuous_dist, discrete_clip=tuple(cfg.discrete_clip))
    if cfg.agent_type == "multitask":
        critic = TwoHotCritic(state_dim, action_space.dim, gammas, num_critics=cfg.num_critics,
                              d_hidden=cfg.critic_hidden, num_bins=cfg.two_hot_bins,
                              min_return=cfg.two_hot_min_return, max_return=cfg.two_hot_max_return)
    elif action_space.discrete:
        critic = DiscreteCritic(state_dim, action_space.dim, num_gammas=len(gammas), num_critics=cfg.num_critics,
                                d_hidden=cfg.critic_hidden)
    else:
        critic = ContinuousCritic(state_dim, action_space.dim, gammas, num_critics=cfg.num_critics,
                                  d_hidden=cfg.critic_hidden)
    return actor, critic


def build_agent_modules(cfg: TrainConfig, observation_spec, action_spec, timestep_encoder: nn.Module | None = None
                        ) -> AgentModules:
    """Default modules for an env: MLP timestep encoder (unless given), the configured trajectory encoder, heads."""
    action_space = action_space_from_spec(action_spec)
    tstep = timestep_encoder or build_timestep_encoder(cfg, observation_spec, action_spec)
    traj = build_trajectory_encoder(cfg, tstep.emb_dim)
    actor, critic = build_heads(cfg, encoder_emb_dim(traj), action_space)
    return AgentModules(tstep, traj, actor, critic, action_space)


def build_loss(cfg: TrainConfig, m: AgentModules) -> AMAGOLoss:
    multitask = cfg.agent_type == "multitask"
    # multi-binary policies have no reparameterised sample, so their default is filtered BC only (as the original)
    no_dpg = multitask or m.action_space.kind == "multibinary"
    online = cfg.online_coeff if cfg.online_coeff is not None else (0.0 if no_dpg else 1.0)
    offline = cfg.offline_coeff if cfg.offline_coeff is not None else (1.0 if multitask else 0.1)
    return AMAGOLoss(
        m.timestep_encoder, m.trajectory_encoder, m.actor, m.critic, action_space=m.action_space,
        gammas=cfg.gammas, gamma=cfg.gamma, num_critics_td=cfg.num_critics_td, online_coeff=online,
        offline_coeff=offline, critic_loss_weight=cfg.critic_loss_weight, reward_multiplier=cfg.reward_multiplier,
        n_step=cfg.n_step, fbc_filter=cfg.fbc_filter, popart_min_sigma=cfg.popart_min_sigma,
        num_actions_for_value_in_actor_loss=3 if multitask else 1)


def build_policy(m: AgentModules) -> AMAGOPolicy:
    return AMAGOPolicy(m.timestep_encoder, m.trajectory_encoder, m.actor, m.action_space)


def build_exploration(cfg: TrainConfig, action_spec, rollout_horizon: int | None = None) -> nn.Module | None:
    if cfg.exploration == "none":
        return None
    if cfg.exploration == "bilevel":
        if rollout_horizon is None:
            raise ValueError("--exploration bilevel needs the trial horizon (rollout_horizon)")
        return BilevelEpsilonGreedy(action_spec, rollout_horizon=rollout_horizon, steps_anneal=cfg.eps_steps_anneal)
    return EpsilonGreedy(action_spec, eps_start=cfg.eps_start, eps_end=cfg.eps_end, steps_anneal=cfg.eps_steps_anneal)
