"""AMAGO's learning update as a TorchRL ``LossModule``: a multi-gamma actor-critic over one shared sequence model.

``forward`` runs the public steps ``read_batch``, ``encode``, ``policy``, ``critic_target``, ``critic_loss``,
``actor_loss`` and ``diagnostics`` in this order (a variant overrides one; docs/api/objectives.md). The target copies
follow ``AMAGOSoftUpdate(loss, tau=DEFAULT_TAU)``. Unlike the original, DPG reads the current critic through detached
parameters (not a one-step-lagged copy), and a ``DiscreteCritic``'s E_pi Q reuses the online critic pass."""
from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torch.distributions import Distribution

from ..modules.distributions import discrete_clip_of
from ..modules.heads import PopArt, TwoHotCritic
from ..modules.trajectory.adapters import encoder_emb_dim
from ..spaces import ActionSpace
from .batch import AMAGOBatch, masked_mean, redq_reduce
from .filters import make_filter
from .loss_io import REDUCTIONS, AMAGOLossIO, check_cql_coeff, check_gammas, check_heads, check_options, popart_of
from .packing import PackPlan
from .returns import check_n_step, greedy_continues, nstep_return
from .target_encoders import target_states

__all__ = ["AMAGOLoss", "AMAGOBatch", "CriticOutputs", "Policy", "States", "DEFAULT_TAU", "DEFAULT_MULTIGAMMAS",
           "REDUCTIONS"]

#: Polyak factor of the original agent; pass it to ``AMAGOSoftUpdate(loss, tau=DEFAULT_TAU)``.
DEFAULT_TAU = 0.003
#: Auxiliary discounts trained beside the acting gamma (which is appended last).
DEFAULT_MULTIGAMMAS = (0.1, 0.9, 0.95, 0.97, 0.99, 0.995)


class AMAGOLoss(AMAGOLossIO):
    """AMAGO's multi-gamma actor-critic loss over a timestep encoder, a trajectory encoder (any memory the acting
    policy accepts), an ``ActorHead`` and a critic head (``DiscreteCritic``, ``ContinuousCritic`` or
    ``TwoHotCritic``). Every option: docs/api/objectives.md, "Options".

    Keys in: ``loss.tensor_keys`` (``set_keys``; see ``_AcceptedKeys``) and the encoders' inputs, at the root and under
    ``"next"``; the mask follows ``loss_mask_key``. Keys out: ``loss_actor``, ``loss_critic`` and detached
    diagnostics (``out_keys``); the priority key (``"td_error"``, ``[B, T, 1]``) is written into the input batch."""

    def __init__(self, timestep_encoder: TensorDictModuleBase, trajectory_encoder: nn.Module, actor_head: nn.Module,
                 critic_head: nn.Module, *, action_space: ActionSpace,
                 gammas: Optional[Sequence[float]] = None, gamma: float = 0.999, num_critics_td: int = 2,
                 online_coeff: float = 1.0, offline_coeff: float = 0.1, entropy_coeff: float = 0.0,
                 critic_loss_weight: float = 10.0, reward_multiplier: float = 10.0,
                 n_step: int = 1, n_step_cut: float = 0.0,
                 fbc_filter: Union[str, Callable] = "binary",
                 num_actions_for_value_in_critic_loss: int = 1, num_actions_for_value_in_actor_loss: int = 1,
                 popart: Union[bool, PopArt] = True, use_target_actor: bool = True, gumbel_temperature: float = 0.5,
                 cql_coeff: float = 0.0, target_encoders: bool = False,
                 pack_windows: Union[bool, str] = "cpu", reduction: str = "mean"):
        super().__init__()
        self.register_buffer("gammas", check_gammas(gammas, gamma, DEFAULT_MULTIGAMMAS))
        self.two_hot, self.q_per_action = check_heads(actor_head, critic_head, action_space, self.gammas)
        check_options(action_space, actor_head, num_critics_td, online_coeff, entropy_coeff,
                      (num_actions_for_value_in_critic_loss, num_actions_for_value_in_actor_loss), reduction)
        self.action_space, self.num_critics = action_space, int(getattr(critic_head, "num_critics", 1))
        self.cql_coeff = check_cql_coeff(cql_coeff, self.q_per_action)
        self.register_buffer("cql_scale", torch.ones(()), persistent=False)  # a schedule may fill it in place
        self.num_critics_td, self.entropy_coeff = int(num_critics_td), float(entropy_coeff)
        self.online_coeff, self.offline_coeff = float(online_coeff), float(offline_coeff)
        self.critic_loss_weight, self.reward_multiplier = float(critic_loss_weight), float(reward_multiplier)
        self.n_step = check_n_step(n_step, n_step_cut, action_space.discrete, action_space.kind)
        self.n_step_cut = float(n_step_cut)
        self.fbc_filter = make_filter(fbc_filter)
        self.k_critic = 1 if self.q_per_action else int(num_actions_for_value_in_critic_loss)
        self.k_actor = 1 if self.q_per_action else int(num_actions_for_value_in_actor_loss)
        self.use_target_actor, self.gumbel_temperature = bool(use_target_actor), float(gumbel_temperature)
        self.pack_windows, self.reduction = pack_windows, reduction
        self.discrete_clip = discrete_clip_of(actor_head)  # buffer actions are softened with the policy's own clip
        self.use_popart, self.popart = popart_of(popart, self.gammas.numel())
        self.timestep_encoder = timestep_encoder  # plain submodules, run once per batch, trained by both losses
        self.trajectory_encoder = trajectory_encoder  # adapted by __setattr__
        self.convert_to_functional(actor_head, "actor_head", create_target_params=True)
        self.convert_to_functional(critic_head, "critic_head", create_target_params=True)
        self.target_encoders = bool(target_encoders)
        if self.target_encoders:  # SoftUpdate pairs target_backbone_params with the `backbone_params` property
            self._copy_backbone_to_target()
            self._has_update_associated["backbone"] = False  # TorchRL warns until a target updater is attached

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The steps of the module docstring -> ``loss_actor``, ``loss_critic`` and detached diagnostics."""
        batch = self.read_batch(tensordict)
        batch, states = self.encode(tensordict, batch)
        policy = self.policy(states)
        td_target = self.critic_target(batch, states, policy)
        critic_loss, critic = self.critic_loss(batch, states, td_target)
        actor_loss, terms = self.actor_loss(batch, states, policy.dist, critic)
        out = TensorDict({"loss_actor": actor_loss, "loss_critic": self.critic_loss_weight * critic_loss}, [])
        with torch.no_grad():
            self.diagnostics(out, batch, critic_loss, critic, td_target, policy.dist, terms)
            self._write_priority(tensordict, states, critic, td_target, batch)
        return out

    def encode(self, tensordict: TensorDictBase, batch: AMAGOBatch) -> tuple[AMAGOBatch, States]:
        """Step 2: ONE pass of both encoders over the T+1 sequence -> (batch, :class:`States`), on packed rows when
        ``pack_windows`` packs; s_{t+1} is that pass detached, or the encoders' target copy's pass."""
        plan = self._packing_plan(batch.mask)
        emb = self._encoder_pass(tensordict, batch, plan)  # [B or R, T+1, D]
        s_next = emb[:, 1:].detach()
        if self.target_encoders:
            s_next = target_states(self, lambda: self._encoder_pass(tensordict, batch, plan))
        packed = batch if plan is None else self._pack_batch(batch, plan)
        return packed, States(emb[:, :-1], s_next, emb, plan, batch.mask.shape[0])

    def policy(self, states: States) -> Policy:
        """Step 3: pi(.|s_t) (with grad) and pi'(.|s_{t+1}) of the TD targets (no grad; the target actor's unless
        ``use_target_actor=False``)."""
        if not (self.use_target_actor or self.target_encoders):
            params = self._actor(self.actor_head_params, states.emb).float()
            return Policy(self.actor_head.dist(params[:, :-1]), self.actor_head.dist(params[:, 1:].detach()))
        dist = self.actor_head.dist(self._actor(self.actor_head_params, states.emb[:, :-1]).float())
        with torch.no_grad():
            head = self.target_actor_head_params if self.use_target_actor else self.actor_head_params
            params_next = self._actor(head, states.s_next).float()
        return Policy(dist, self.actor_head.dist(params_next))

    @torch.no_grad()
    def critic_target(self, batch: AMAGOBatch, states: States, policy: Policy) -> torch.Tensor:
        """Step 4: TD targets y ``[B, T, G]`` (n-step returns of ``reward_multiplier * r`` bootstrapped with
        :meth:`next_value`), no grad; PopArt's statistics follow them."""
        v_next = self.next_value(states.s_next, policy.dist_next)
        continues = None
        if self.n_step > 1 and self.n_step_cut > 0:
            continues = greedy_continues(policy.dist_next.probs, batch.action_index, self.n_step_cut)
        td_target = nstep_return(batch.reward, batch.terminated, batch.mask, v_next, self.gammas, self.n_step,
                                 self.reward_multiplier, continues=continues)
        if self.use_popart:
            self.popart.update_stats(td_target, batch.mask)
        return td_target

    def next_value(self, s_next: torch.Tensor, dist_next: Distribution) -> torch.Tensor:
        """V'(s_{t+1}) ``[B, T, G]``: E_{a'~pi'} of the target critics, PopArt-denormalised, REDQ-reduced over
        ``num_critics_td`` members (their min while the DPG term is on, else their mean)."""
        if self.q_per_action:
            q_next = self._critic(self.target_critic_head_params, s_next).float()  # [B, T, C, G, A]
            v_next = (q_next * dist_next.probs.unsqueeze(-3)).sum(-1)  # E_pi' Q, [B, T, C, G]
        else:
            a_next = self._sample(dist_next, self.k_critic, reparam=False)
            v_next = self._values(self._critic(self.target_critic_head_params, s_next, a_next).float()).mean(0)
        if self.use_popart and not self.two_hot:
            v_next = self.popart(v_next, normalized=False)  # old stats
        return redq_reduce(v_next, self.num_critics_td, use_min=self.online_coeff > 0)

    def critic_loss(self, batch: AMAGOBatch, states: States, td_target: torch.Tensor):
        """Step 5: the critic loss (before ``critic_loss_weight``) and :class:`CriticOutputs`: PopArt-normalised
        squared error (two-hot cross-entropy with a ``TwoHotCritic``) plus the conservative term."""
        s, q_all, a_buf = states.s, None, batch.action_features
        if self.action_space.discrete:  # the original's softened one-hot buffer action
            a_buf = a_buf.clamp(*self.discrete_clip)
            a_buf = a_buf / a_buf.sum(-1, keepdim=True)
        if self.q_per_action:
            q_all = self._critic(self.critic_head_params, s).float()  # [B, T, C, G, A]
            q_sa = (q_all * a_buf[:, :, None, None, :]).sum(-1)  # [B, T, C, G]
        else:
            q_out = self._critic(self.critic_head_params, s, a_buf).float()
            q_sa = self._values(q_out) if self.two_hot else q_out
        td_norm = self.popart.normalize_values(td_target) if self.use_popart else td_target
        if self.two_hot:
            labels = self.critic_head.labels(td_target)  # [B, T, G, bins]
            critic_el = -(labels.unsqueeze(2) * torch.log_softmax(q_out, -1)).sum(-1)  # [B, T, C, G]
        else:
            pred = self.popart(q_sa) if self.use_popart else q_sa
            critic_el = (pred - td_norm.unsqueeze(2)).square()
        cql_gap = None
        if self.cql_coeff > 0:  # per-action critic: pred is the softened buffer action's mix of q_all
            cql_gap = conservative_gap(q_all, pred, self.popart if self.use_popart else None)
            critic_el = critic_el + (self.cql_coeff * self.cql_scale) * cql_gap
        return self._reduce(critic_el, batch), CriticOutputs(q_sa, q_all, cql_gap, td_norm)

    def actor_loss(self, batch: AMAGOBatch, states: States, dist: Distribution, critic: CriticOutputs):
        """Step 6: ``online_coeff * DPG + offline_coeff * filtered BC - entropy_coeff * H(pi)`` -> (loss, terms);
        ``terms``: the per-step ``dpg``, ``bc``, ``adv``, ``weights`` and ``logp`` (None when off)."""
        s = states.s
        (B, T), G = batch.mask.shape, self.gammas.numel()
        actor_el = torch.zeros((), device=s.device)
        q_pi = self._policy_value(s, dist, critic)  # E_pi Q(s, .) per member [B, T, C, G] or None
        dpg = None
        if self.online_coeff > 0:
            q_min = q_pi.amin(2)  # min over all C critics, [B, T, G]
            if self.use_popart:
                q_min = self.popart.normalize_values(q_min) if self.two_hot else self.popart(q_min)
            dpg = -q_min
            actor_el = actor_el + self.online_coeff * dpg
        bc = adv = weights = logp = None
        if self.offline_coeff > 0:
            with torch.no_grad():
                if q_pi is None:
                    a_v = self._sample(dist, self.k_actor, reparam=False)
                    q_pi = self._values(self._critic(self.critic_head_params, s.detach(), a_v).float()).mean(0)
                adv = critic.q_sa.detach().mean(2) - q_pi.detach().mean(2)  # [B, T, G]
                weights = self.fbc_filter(adv).float()
            a = batch.action_index.unsqueeze(-1) if self.action_space.discrete else batch.action_features.unsqueeze(-2)
            logp = dist.log_prob(a.expand(B, T, G, *a.shape[3:]))
            bc = -(weights * logp)
            actor_el = actor_el + self.offline_coeff * bc
        if self.entropy_coeff > 0:  # [B, T, G]: every gamma's policy
            actor_el = actor_el - self.entropy_coeff * dist.entropy()
        actor_el = actor_el.expand(B, T, G) if actor_el.ndim == 0 else actor_el
        return self._reduce(actor_el, batch), dict(dpg=dpg, bc=bc, adv=adv, weights=weights, logp=logp)

    def _policy_value(self, s: torch.Tensor, dist: Distribution, critic: CriticOutputs) -> Optional[torch.Tensor]:
        """E_pi Q(s, .) per member ``[B, T, C, G]`` with grad through pi only, where an actor term needs it now
        (a ``DiscreteCritic``'s pass reused, or reparameterised samples for DPG); else None."""
        if self.q_per_action and (self.online_coeff > 0 or self.offline_coeff > 0):
            # critic evaluated on detached s with detached params == q_all.detach(): reuse it
            probs = dist.probs if self.online_coeff > 0 else dist.probs.detach()
            return (critic.q_all.detach() * probs.unsqueeze(-3)).sum(-1)
        if self.online_coeff > 0:  # a DiscreteCritic with online_coeff > 0 returned above
            a_pi = self._sample(dist, self.k_actor, reparam=True)
            q_out = self._call_with(self.critic_head, self.critic_head_params, s.detach(), a_pi, detach=True)
            return self._values(q_out.float()).mean(0)
        return None

    def diagnostics(self, out: TensorDictBase, batch: AMAGOBatch, critic_loss: torch.Tensor, critic: CriticOutputs,
                    td_target: torch.Tensor, dist: Distribution, terms: dict) -> None:
        """Step 7: detached logging scalars into ``out`` (no host sync; no name starts with ``loss``)."""
        mask = batch.mask
        m3 = mask.unsqueeze(-1).expand_as(td_target)
        q_raw = critic.q_sa.detach()
        if self.use_popart and not self.two_hot:
            q_raw = self.popart(q_raw, normalized=False)
        q_raw = q_raw.mean(2)  # [B, T, G]
        out.set("critic_loss_unweighted", critic_loss.detach())
        valid = mask.sum()
        out.set("q_mean", torch.where(m3, q_raw, 0.0).sum((0, 1)) / valid.clamp(min=1))  # [G], reward-multiplied units
        out.set("td_target_min", torch.where(m3, td_target, float("inf")).amin())
        out.set("td_target_max", torch.where(m3, td_target, float("-inf")).amax())
        out.set("valid_steps", valid.float())
        out.set("popart_mu", self.popart.mu[-1].clone())
        out.set("popart_sigma", self.popart.sigma[-1].clone())
        per_step = {"td_target_mean": td_target[..., -1], "reward_mean": batch.reward,
                    "policy_entropy": dist.entropy()[..., -1]}
        if terms.get("dpg") is not None:
            per_step["actor_online"] = terms["dpg"]
        if terms.get("bc") is not None:
            per_step.update(actor_offline=terms["bc"], adv_mean=terms["adv"], filter_acceptance=(terms["weights"] > 0),
                            filter_mean=terms["weights"], logp_mean=terms["logp"])
        B, T = mask.shape  # each a mean over its valid steps (and over its other dims: gammas, samples)
        rows = torch.stack([v.detach().float().reshape(B, T, -1).mean(-1) for v in per_step.values()])
        means = torch.where(mask, rows, 0.0).sum((1, 2)) / (valid + 1e-5)
        for key, value in zip(per_step, means.unbind(0)):
            out.set(key, value)
        if critic.cql_gap is not None:
            out.set("cql_gap", masked_mean(critic.cql_gap.detach(), mask))

    def td_error(self, critic: CriticOutputs, td_target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """TorchRL's priority signal ``[B, T]`` (0 on padding): ``|Q(s, a_buffer) - TD target|`` in the critic's
        training units, the largest over the ensemble, averaged over the gammas."""
        pred, target = critic.q_sa.detach(), td_target
        if self.use_popart:
            pred = self.popart.normalize_values(pred) if self.two_hot else self.popart(pred)
            target = self.popart.normalize_values(td_target) if critic.target is None else critic.target
        err = (pred - target.unsqueeze(2)).abs().amax(2).mean(-1)
        return torch.where(mask, err, torch.zeros((), dtype=err.dtype, device=err.device))

    def _write_priority(self, tensordict: TensorDictBase, states: States, critic: CriticOutputs,
                        td_target: torch.Tensor, batch: AMAGOBatch) -> None:
        """:meth:`td_error` into the input batch (its own rows and steps: unpacked, uncut), ``[B, T, 1]``."""
        td_error = self.td_error(critic, td_target, batch.mask)
        if states.plan is not None:
            td_error = states.plan.unpack_steps(td_error, states.rows)
        if batch.cut is not None:
            td_error = batch.cut.uncut(td_error)
        with tensordict.unlock_() if tensordict.is_locked else contextlib.nullcontext():
            tensordict.set(self.tensor_keys.priority, td_error.unsqueeze(-1))

    @classmethod
    def multi_task(cls, timestep_encoder, trajectory_encoder, actor_head, critic_head=None, *,
                   action_space: ActionSpace, gammas=None, gamma: float = 0.999, num_critics: int = 4,
                   critic_kwargs: Optional[dict] = None, **kwargs) -> "AMAGOLoss":
        """The original's ``MultiTaskAgent`` defaults: online 0, offline 1, two-hot critic, K_a = 3
        (``critic_head=None`` builds a ``TwoHotCritic`` on the trajectory encoder's ``emb_dim``)."""
        if gammas is None:
            gammas = list(DEFAULT_MULTIGAMMAS) + [gamma]
        if critic_head is None:
            critic_head = TwoHotCritic(encoder_emb_dim(trajectory_encoder), action_space.dim, gammas, num_critics,
                                       **(critic_kwargs or {}))
        elif not isinstance(critic_head, TwoHotCritic):
            raise ValueError(f"multi_task expects a TwoHotCritic critic_head, got {type(critic_head).__name__}")
        defaults = {"online_coeff": 0.0, "offline_coeff": 1.0, "num_actions_for_value_in_actor_loss": 3, **kwargs}
        return cls(timestep_encoder, trajectory_encoder, actor_head, critic_head, action_space=action_space,
                   gammas=gammas, **defaults)


def conservative_gap(q_all: torch.Tensor, pred: torch.Tensor, popart: Optional[torch.nn.Module]) -> torch.Tensor:
    """The conservative term of ``cql_coeff`` (CQL(H), Kumar et al. 2020; not in the original):
    ``logsumexp_a Q(s, a) - Q(s, a_buffer)`` ``[B, T, C, G]`` in the critic's training units, from the raw ``q_all``
    ``[B, T, C, G, A]`` and ``pred`` (already through ``popart``, the loss's layer or None)."""
    pred_all = popart(q_all.movedim(-1, 0)).movedim(0, -1) if popart is not None else q_all
    return torch.logsumexp(pred_all, -1) - pred


class States(NamedTuple):
    """What :meth:`AMAGOLoss.encode` gives the later steps (rows are the packed ones when windows are packed)."""

    s: torch.Tensor  #: [B, T, D] s_t, with grad
    s_next: torch.Tensor  #: [B, T, D] s_{t+1} of the TD targets, no grad
    emb: torch.Tensor  #: [B, T+1, D] the encoders' pass over the T+1 sequence (``s`` is ``emb[:, :-1]``)
    plan: Optional[PackPlan] = None  #: how the windows share rows (None: one window per row)
    rows: int = 0  #: the batch's own number of rows, to unpack per-step outputs


class Policy(NamedTuple):
    """What :meth:`AMAGOLoss.policy` gives the later steps: one distribution per step and gamma."""

    dist: Distribution  #: pi(.|s_t) [B, T, G], with grad
    dist_next: Distribution  #: pi'(.|s_{t+1}) [B, T, G] of the TD targets, no grad


class CriticOutputs(NamedTuple):
    """What :meth:`AMAGOLoss.critic_loss` gives the actor step and the diagnostics."""

    q_sa: torch.Tensor  #: Q(s, a_buffer) per member [B, T, C, G], raw critic output space (with grad)
    q_all: Optional[torch.Tensor]  #: DiscreteCritic only: Q(s, .) [B, T, C, G, A] (with grad)
    cql_gap: Optional[torch.Tensor] = None  #: cql_coeff > 0: logsumexp_a Q(s, a) - Q(s, a_buffer) [B, T, C, G]
    target: Optional[torch.Tensor] = None  #: the TD target in the critic's training units [B, T, G] (PopArt's)
