"""AMAGO's learning update as a TorchRL ``LossModule``: multi-gamma actor-critic over one shared sequence model.

One call on a ``[B, T]`` replay window:
  1. builds the T+1 sequence ``[root[:, 0], next[:, 0], ..., next[:, T-1]]`` and runs the timestep encoder and
     the trajectory encoder ONCE over it (no target copy of the backbone unless a discount reaches
     ``target_backbone_min_gamma``: then a second, no-grad pass of Polyak-averaged encoders gives the s_{t+1} of
     the TD targets, of every discount or, with ``target_backbone_all_gammas=False``, of those that reach it);
  2. TD targets (no grad): target actor on ``s_{t+1}``, target critic ensemble, PopArt-denormalised with the old
     stats, REDQ reduce (min of ``num_critics_td`` random members if the online actor term is on, else mean),
     multi-gamma n-step return (stops at ``terminated`` and padding), PopArt stats update, normalise;
  3. critic loss: PopArt-normalised MSE (or two-hot cross-entropy for a ``TwoHotCritic``), plus, with
     ``cql_coeff > 0``, a conservative term on a per-action critic;
  4. actor loss: ``online_coeff * -Q(s, a~pi)`` through critic params that are detached (the actor term never
     moves the critic) plus ``offline_coeff * -f(A) log pi(a_buf|s)`` (filtered BC), A = Q(s, a_buf) - V(s) in
     the critic's raw output space as the original.

Targets exist only for the actor and critic heads (``target_actor_head_params``, ``target_critic_head_params``);
update them with ``torchrl.objectives.SoftUpdate(loss, tau=DEFAULT_TAU)`` after each optimizer step (the updater
may be built before or after the first loss call).

``forward`` reads as the steps above: :meth:`_read_batch`, :meth:`_backbone`, :meth:`_policy_outputs`,
:meth:`_targets`, :meth:`_critic_loss`, :meth:`_actor_loss`. A variant is a subclass that overrides one step
(docs/swapping.md shows a custom actor objective trained by the stock trainer).

Deliberate differences from the original: the DPG term reads the *current* online critic through detached
parameters instead of a one-step-lagged "maximized" copy (so it never accumulates phantom critic gradients),
and with a ``DiscreteCritic`` the value E_pi Q reuses the online critic pass (``q.detach() . pi``) instead of a
second, identical critic pass.
"""
from __future__ import annotations

import contextlib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torchrl.objectives import LossModule

from .. import keys as K
from ..modules.distributions import discrete_clip_of
from ..modules.heads import DiscreteCritic, PopArt, TwoHotCritic
from ..modules.trajectory.adapters import as_sequence_module, encoder_emb_dim
from ..spaces import ActionSpace
from .batch import (as_bt, buffer_actions, init_sequence, masked_mean, redq_members, redq_reduce,
                    t_plus_one_sequence)
from .filters import make_filter
from .packing import PackPlan, pack_mode, packs_here, plan_packing
from .returns import nstep_return, tree_backup_return

@contextmanager
def swapped_parameters(module: nn.Module, params: TensorDictBase):
    """Within the block, ``module``'s parameters named by the nested keys of ``params`` are those tensors (plain
    tensors, no copy); the module's own parameters are put back on exit. ``params`` itself is left untouched
    (``TensorDict.to_module`` would write Parameters into it)."""
    saved = []
    try:
        for key, value in params.items(True, True):
            *path, leaf = key
            owner = module.get_submodule(".".join(path))
            saved.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = value
        yield
    finally:
        for owner, leaf, old in reversed(saved):
            owner._parameters[leaf] = old


__all__ = ["AMAGOLoss", "AMAGOBatch", "CriticOutputs", "DEFAULT_TAU", "DEFAULT_MULTIGAMMAS",
           "DEFAULT_TARGET_BACKBONE_MIN_GAMMA", "REDUCTIONS"]

#: Polyak factor of the original agent; pass it to ``SoftUpdate(loss, tau=DEFAULT_TAU)``.
DEFAULT_TAU = 0.003
#: Auxiliary discounts trained beside the acting gamma (which is appended last).
DEFAULT_MULTIGAMMAS = (0.1, 0.9, 0.95, 0.97, 0.99, 0.995)
#: A discount at or above this turns on the encoders' target copy for the TD targets by default
#: (``AMAGOLoss(target_backbone_min_gamma=...)``): horizons of 10,000 steps and more, whose 1-step targets catch up
#: with a solved policy in one burst (docs/api/objectives.md). No default discount of the original reaches it.
DEFAULT_TARGET_BACKBONE_MIN_GAMMA = 0.9999
#: ``AMAGOLoss(reduction=...)``, TorchRL's names
REDUCTIONS = ("mean", "sum", "none")
#: which actor-loss terms train the shared encoders (``AMAGOLoss(actor_encoder_grad=...)``)
ACTOR_ENCODER_GRADS = ("all", "bc", "none")


class AMAGOBatch(NamedTuple):
    """What :meth:`AMAGOLoss._read_batch` extracts from a ``[B, T]`` window (padding already neutralised)."""

    mask: torch.Tensor  #: [B, T] bool, False on padding
    reward: torch.Tensor  #: [B, T] raw env reward r_t
    terminated: torch.Tensor  #: [B, T] bool
    action_features: torch.Tensor  #: [B, T, A] float buffer action as critic input (one-hot for discrete)
    action_index: Optional[torch.Tensor]  #: [B, T] long for discrete spaces, else None
    explored: Optional[torch.Tensor] = None  #: [B, T] bool: exploration changed a_t (None: the batch does not say)


class CriticOutputs(NamedTuple):
    """Online critic outputs of :meth:`AMAGOLoss._critic_loss`, reused by the actor step."""

    q_sa: torch.Tensor  #: Q(s, a_buffer) per member [B, T, C, G], raw critic output space (with grad)
    q_all: Optional[torch.Tensor]  #: DiscreteCritic only: Q(s, .) [B, T, C, G, A] (with grad)
    cql_gap: Optional[torch.Tensor] = None  #: cql_coeff > 0: logsumexp_a Q(s, a) - Q(s, a_buffer) [B, T, C, G]


class AMAGOLoss(LossModule):
    """AMAGO's multi-gamma actor-critic loss (see the module docstring for the computation).

    Args:
        timestep_encoder: TensorDict module reading the env's observation keys + ``prev_action`` /
            ``prev_reward`` and writing ``"tstep_emb"`` (e.g. ``MLPTimestepEncoder``).
        trajectory_encoder: any memory the acting policy accepts (``modules.trajectory.adapters``): a
            ``TrajectoryEncoder`` (wrapped here in ``TrajectoryEncoderModule``), TorchRL's ``LSTMModule`` /
            ``GRUModule`` (run in recurrent mode; the T+1 sequence carries ``is_init``), or a feed-forward
            ``TensorDictModule`` reading ``"tstep_emb"``. Assigning ``loss.trajectory_encoder = enc`` later adapts
            it the same way.
        actor_head: ``ActorHead``; critic_head: ``DiscreteCritic`` | ``ContinuousCritic`` | ``TwoHotCritic``.
        action_space: the env's ``ActionSpace`` (actions may be one-hot or index for discrete spaces).
        gammas: all discounts (last = acting gamma). Default ``DEFAULT_MULTIGAMMAS + (gamma,)``.
        gamma: the acting discount (used only when ``gammas`` is None).
        num_critics_td: ensemble members drawn (with replacement, per (b, t, gamma)) for each TD target.
        online_coeff / offline_coeff: weights of the DPG term and of the filtered-BC term.
        entropy_coeff: weight of a policy-entropy bonus (discrete actions; 0, the original's, by default). Not in
            the original: a remedy measured on POPGym tasks where DPG collapses the policy onto a few actions
            (docs/results/popgym_campaign.md).
        critic_loss_weight: ``loss_critic`` is already multiplied by it.
        cql_coeff: weight of a conservative term added to the critic loss of a per-action critic (CQL(H), Kumar
            et al. 2020): ``logsumexp_a Q(s, a) - Q(s, a_buffer)`` in the units the critic is trained in
            (PopArt-normalised), per step, critic and gamma. It pushes down the values of actions the replay rarely
            takes in a state, which few TD targets correct. 0 (default): off, the original's critic loss. Not in the
            original; see docs/api/objectives.md. The term is weighted by ``cql_coeff * loss.cql_scale``, a
            non-persistent scalar buffer (1 at construction) that a schedule may fill in place between updates
            (the trainer's ``--cql_ramp``; in place, so a captured CUDA graph reads the new value).
        reward_multiplier: rewards are scaled by it inside the loss only.
        n_step: n-step returns (stop at ``terminated`` and at padding; ``truncated`` bootstraps).
        n_step_cut: with ``n_step > 1``, a return also stops before an intermediate step whose buffer action the
            target policy rates below ``n_step_cut`` x its most likely action's probability (1: stop at any
            non-greedy action, as Watkins' Q(lambda); 0, the default: never, plain n-step returns). Continuous
            actions take 0 or 1; at 1 every return is 1-step (a sampled action is never the mode), so
            ``self.n_step`` is 1.
        n_step_stop_explored: with ``n_step > 1``, a return also stops before an intermediate step whose buffer action
            exploration changed (the batch's ``explored`` entry, written by this package's exploration modules; for
            continuous actions every noisy one). The policy's own sampled actions keep the return going. A batch
            without the entry is not cut (a warning says so once). Not in the original; off by default.
        n_step_min_gamma: with ``n_step > 1``, gammas below it keep 1-step returns (default 0: every gamma is n-step).
            One-step TD already reaches across a short horizon; n steps of behaviour data add their off-policy bias
            to every gamma alike. Not in the original.
        tree_backup: with ``n_step > 1`` and a per-action critic (``DiscreteCritic``): n-step Tree Backup targets
            (``returns.tree_backup_return``): each later step enters a return weighted by the target policy's
            probability of its buffer action, with the target Q of the actions not taken filling in; the target
            value is then E_pi of the per-action REDQ-reduced Q. Not in the original; off by default.
        fbc_filter: 'binary' | 'exp' | 'leaky_relu' | callable ``f(adv) -> weights``; ``fbc_filter_kwargs``
            are bound to it.
        num_actions_for_value_in_critic_loss / _actor_loss: K sampled actions for E_pi Q with action-input
            critics (ignored by ``DiscreteCritic``, which uses the probability vector exactly).
        popart: PopArt-normalise the critic (MSE critics); two-hot critics use its stats only for the DPG term.
        popart_beta / popart_init_nu / popart_min_sigma / popart_min_sigma_ratio: PopArt's EMA rate, initial
            second moment, sigma floor and floor relative to the largest gamma's sigma (see :class:`PopArt`; for
            gammas whose returns are nearly constant).
        use_target_actor: sample a' from the target actor (else the online actor, detached).
        two_hot: force the two-hot path (auto when ``critic_head`` is a ``TwoHotCritic``).
        gumbel_temperature: straight-through Gumbel-softmax temperature for discrete DPG through an
            action-input critic (the original's ``DiscreteLikeContinuous``).
        pack_windows: run a batch of windows of different lengths on fewer rows, several windows one after
            another per row (``objectives/packing.py``; the same loss and gradients), when the trajectory
            encoder can keep them apart (Transformer, per-step encoders). ``"cpu"`` (default): batches on the
            CPU only (on a GPU the plan's host read costs more than it saves); ``"always"`` / True;
            ``"never"`` / False: one window per row.
        target_backbone: when a discount reaches ``target_backbone_min_gamma``, TD targets read s_{t+1} from a
            Polyak-averaged copy of the timestep and trajectory encoders (``target_backbone_params``, moved by the
            same ``SoftUpdate`` as the heads) instead of the online encoders with target heads (the original has no
            target encoder). Costs one more encoder forward pass (no grad) per update; see docs/api/objectives.md.
            False: no copy, every discount reads the online encoders (the original).
        target_backbone_min_gamma: the copy is built when a discount is at or above this (default 0.9999,
            ``DEFAULT_TARGET_BACKBONE_MIN_GAMMA``; 0.0: always). When no discount reaches it, no copy is built and
            the loss is the plain one: with the default discounts (at most 0.999) the default loss is the original's.
        target_backbone_all_gammas: with the copy built, every discount's TD targets read it (default); False: only
            the discounts at or above ``target_backbone_min_gamma``, the others read the online encoders' s_{t+1}
            (their targets are computed a second time).
        actor_encoder_grad: which actor-loss terms send gradients into the shared encoders: ``"all"`` (default, as
            the original), ``"bc"`` (only the filtered-BC term; the DPG and entropy terms move the actor head alone,
            which costs one more actor-head pass; ``_actor_loss`` then receives that head's distribution as
            ``dist_dpg=``) or ``"none"`` (the encoders learn from the critic loss alone, as DrQ and SAC-AE do). Not
            in the original; see docs/api/objectives.md.
        reduction: ``"mean"`` (default; the original's masked mean over valid steps, critics and gammas), ``"sum"``
            (the per-step mean over critics and gammas, summed over valid steps) or ``"none"`` (that per-step mean,
            ``[B, T]``, 0 on padding; windows are then not packed), as TorchRL's losses take it.

    TorchRL conventions: ``forward`` also writes TorchRL's priority entry (``tensor_keys.priority``, ``"td_error"``)
    into the input batch, ``[B, T, 1]`` (see :meth:`_td_error`), for prioritized samplers; the validity mask follows
    ``loss_mask_key`` (see ``_AcceptedKeys.mask``); ``make_value_estimator`` is refused (the targets are
    multi-gamma n-step returns; see its docstring).
    """

    actor_head: nn.Module
    actor_head_params: TensorDictParams
    target_actor_head_params: TensorDictParams
    critic_head: nn.Module
    critic_head_params: TensorDictParams
    target_critic_head_params: TensorDictParams

    @dataclass
    class _AcceptedKeys:
        """Batch keys read by the loss (override with ``loss.set_keys(...)``); defaults from ``torchrl_amago.keys``.

        Attributes:
            action (NestedKey): the buffer action a_t, in the env's encoding (one-hot or index for discrete
                spaces, ``[B, T, A]`` floats otherwise).
            reward (NestedKey): r_t, ``[B, T(, 1)]``; scaled by ``reward_multiplier`` inside the loss only.
            terminated (NestedKey): ``[B, T(, 1)]`` bool; stops bootstrapping (``truncated`` does not).
            mask (NestedKey): ``[B, T]`` (or ``[B, T, 1]``) bool, False on padding. Which entries mark valid steps
                follows TorchRL's ``loss.loss_mask_key``: ``"auto"`` (default) ANDs this key and TorchRL's
                ``("collector", "mask")``, whichever are present (the sequence replay writes both), and a batch with
                neither is an error (an all-valid default would silently train on padding); a key: that entry
                only; ``None``: every step is valid (unpadded windows, e.g. TorchRL's ``SliceSampler``).
            time_idx (NestedKey): steps since the hard reset, read at the root (step 0) and under ``"next"``; fed to
                the trajectory encoder's time key.
            is_init (NestedKey): first step after a hard reset, read under ``"next"`` (optional; False if absent).
                The sequence the loss builds marks position 0 as ``is_init`` (a window starts from a fresh memory
                state), so TorchRL's recurrent modules reset there and wherever a new trial starts inside it.
            prev_action (NestedKey): a_{t-1} features, root and ``"next"``; fed to the timestep encoder.
            prev_reward (NestedKey): r_{t-1}, root and ``"next"``; fed to the timestep encoder.
            priority (NestedKey): written (not read): the per-step TD error ``[B, T, 1]`` for prioritized samplers,
                TorchRL's ``"td_error"``.
            explored (NestedKey): ``[B, T(, 1)]`` bool, True where exploration changed the buffer action; read with
                ``n_step_stop_explored`` (optional: a batch without it is not cut).
        """

        action: NestedKey = K.ACTION
        reward: NestedKey = ("next", K.REWARD)
        terminated: NestedKey = ("next", K.TERMINATED)
        mask: NestedKey = K.MASK
        time_idx: NestedKey = K.TIME_IDX
        is_init: NestedKey = K.IS_INIT
        prev_action: NestedKey = K.PREV_ACTION
        prev_reward: NestedKey = K.PREV_REWARD
        priority: NestedKey = "td_error"
        explored: NestedKey = K.EXPLORED

    default_keys = _AcceptedKeys
    #: the two differentiable terms; their sum is the objective (every other output is a detached diagnostic)
    LOSS_KEYS = ("loss_actor", "loss_critic")

    def __init__(
        self,
        timestep_encoder: TensorDictModuleBase,
        trajectory_encoder: nn.Module,
        actor_head: nn.Module,
        critic_head: nn.Module,
        *,
        action_space: ActionSpace,
        gammas: Optional[Sequence[float]] = None,
        gamma: float = 0.999,
        num_critics_td: int = 2,
        online_coeff: float = 1.0,
        offline_coeff: float = 0.1,
        entropy_coeff: float = 0.0,
        critic_loss_weight: float = 10.0,
        cql_coeff: float = 0.0,
        reward_multiplier: float = 10.0,
        n_step: int = 1,
        n_step_cut: float = 0.0,
        n_step_stop_explored: bool = False,
        n_step_min_gamma: float = 0.0,
        tree_backup: bool = False,
        fbc_filter: Union[str, Callable] = "binary",
        fbc_filter_kwargs: Optional[dict] = None,
        num_actions_for_value_in_critic_loss: int = 1,
        num_actions_for_value_in_actor_loss: int = 1,
        popart: bool = True,
        popart_beta: float = 5e-4,
        popart_init_nu: float = 100.0,
        popart_min_sigma: float = 1e-4,
        popart_min_sigma_ratio: float = 0.1,
        use_target_actor: bool = True,
        two_hot: bool = False,
        gumbel_temperature: float = 0.5,
        pack_windows: Union[bool, str] = "cpu",
        target_backbone: bool = True,
        target_backbone_min_gamma: float = DEFAULT_TARGET_BACKBONE_MIN_GAMMA,
        target_backbone_all_gammas: bool = True,
        actor_encoder_grad: str = "all",
        reduction: str = "mean",
    ):
        super().__init__()
        if not isinstance(action_space, ActionSpace):
            raise ValueError(f"action_space must be a torchrl_amago.spaces.ActionSpace, got {type(action_space).__name__}")
        self.action_space = action_space
        if gammas is None:
            gammas = list(DEFAULT_MULTIGAMMAS) + [gamma]
        g = torch.as_tensor(list(gammas), dtype=torch.float32)
        if g.ndim != 1 or g.numel() < 1 or bool(((g < 0) | (g >= 1)).any()):
            raise ValueError(f"gammas must be a non-empty list of values in [0, 1), got {list(gammas)}")
        self.register_buffer("gammas", g)
        G = g.numel()

        # ---- heads: kind detection and compatibility checks
        if isinstance(critic_head, TwoHotCritic):
            two_hot = True
        if two_hot and not (hasattr(critic_head, "labels") and hasattr(critic_head, "to_value")):
            raise ValueError("two_hot=True needs a critic with `labels` and `to_value` (a TwoHotCritic)")
        self.two_hot = bool(two_hot)
        self.q_per_action = isinstance(critic_head, DiscreteCritic) and not self.two_hot
        if self.q_per_action and not action_space.discrete:
            raise ValueError(f"DiscreteCritic needs a discrete action space, got kind {action_space.kind!r}")
        if self.q_per_action and critic_head.num_actions != action_space.dim:
            raise ValueError(f"DiscreteCritic has num_actions={critic_head.num_actions} but the action space has "
                             f"{action_space.dim} actions")
        if not self.q_per_action and getattr(critic_head, "action_dim", action_space.dim) != action_space.dim:
            raise ValueError(f"critic action_dim={critic_head.action_dim} != action space dim {action_space.dim}")
        for name, head in (("actor_head", actor_head), ("critic_head", critic_head)):
            hg = getattr(head, "num_gammas", G)
            if hg != G:
                raise ValueError(f"{name} was built for {hg} gammas but the loss uses {G}: {g.tolist()}")
        cg = getattr(critic_head, "gammas", None)
        if isinstance(cg, torch.Tensor) and (cg.shape != g.shape or not torch.allclose(cg.float().cpu(), g)):
            raise ValueError(f"critic_head gammas {cg.tolist()} differ from the loss gammas {g.tolist()}")
        self.num_critics = int(getattr(critic_head, "num_critics", 1))
        if not 1 <= num_critics_td:
            raise ValueError(f"num_critics_td must be >= 1, got {num_critics_td}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if min(num_actions_for_value_in_critic_loss, num_actions_for_value_in_actor_loss) < 1:
            raise ValueError("num_actions_for_value_in_critic_loss / _actor_loss must be >= 1")
        self.actions_differentiable = bool(getattr(actor_head, "actions_differentiable", True)) or action_space.discrete
        if online_coeff > 0 and not self.actions_differentiable:
            raise ValueError(f"online_coeff={online_coeff} > 0 needs reparameterisable actions; the "
                             f"{action_space.kind} policy has none: set online_coeff=0")
        if entropy_coeff < 0 or (entropy_coeff > 0 and not action_space.discrete):
            raise ValueError(f"entropy_coeff={entropy_coeff}: must be >= 0, and > 0 only for discrete actions (the "
                             f"{action_space.kind} policy's entropy has no closed form here)")

        if cql_coeff < 0 or (cql_coeff > 0 and not self.q_per_action):
            raise ValueError(f"cql_coeff={cql_coeff}: must be >= 0, and > 0 only with a per-action critic (a "
                             f"DiscreteCritic with discrete actions, not two-hot): the term needs Q(s, .) of every "
                             f"action")
        self.cql_coeff = float(cql_coeff)
        self.register_buffer("cql_scale", torch.ones(()), persistent=False)
        self.num_critics_td = int(num_critics_td)
        self.online_coeff, self.offline_coeff = float(online_coeff), float(offline_coeff)
        self.entropy_coeff = float(entropy_coeff)
        self.critic_loss_weight, self.reward_multiplier = float(critic_loss_weight), float(reward_multiplier)
        if not 0.0 <= n_step_cut <= 1.0 or (0.0 < n_step_cut < 1.0 and not action_space.discrete):
            raise ValueError(f"n_step_cut={n_step_cut}: must be in [0, 1], and 0 or 1 for {action_space.kind} actions "
                             f"(a fraction compares a discrete buffer action's probability with the mode's)")
        self.n_step_cut = float(n_step_cut)
        # Watkins' cut on a continuous policy: a sampled action is never the mode, so every return stops after 1 step
        self.n_step = 1 if (self.n_step_cut == 1.0 and not action_space.discrete) else int(n_step)
        if not 0.0 <= n_step_min_gamma < 1.0:
            raise ValueError(f"n_step_min_gamma={n_step_min_gamma}: must be in [0, 1) (gammas below it keep 1-step "
                             f"returns)")
        self.n_step_stop_explored, self.n_step_min_gamma = bool(n_step_stop_explored), float(n_step_min_gamma)
        self.tree_backup = bool(tree_backup)
        stops = self.n_step_cut > 0 or self.n_step_stop_explored or self.n_step_min_gamma > 0
        if self.tree_backup and n_step > 1 and (not self.q_per_action or stops):
            raise ValueError("tree_backup=True needs a per-action critic (DiscreteCritic, discrete actions, not "
                             "two_hot) and returns that do not stop early (--n_step_cut 0 --no-n_step_stop_explored "
                             f"--n_step_min_gamma 0); got critic {type(critic_head).__name__}, two_hot={self.two_hot}, "
                             f"n_step_cut={self.n_step_cut}, n_step_stop_explored={self.n_step_stop_explored}, "
                             f"n_step_min_gamma={self.n_step_min_gamma}")
        self.fbc_filter = make_filter(fbc_filter, **(fbc_filter_kwargs or {}))
        self.k_critic = 1 if self.q_per_action else int(num_actions_for_value_in_critic_loss)
        self.k_actor = 1 if self.q_per_action else int(num_actions_for_value_in_actor_loss)
        self.use_popart, self.use_target_actor = bool(popart), bool(use_target_actor)
        self.gumbel_temperature = float(gumbel_temperature)
        self.pack_windows = pack_windows  # normalised to one of PACK_MODES by the property
        self.discrete_clip = discrete_clip_of(actor_head)  # buffer actions are softened with the policy's own clip
        self.popart = PopArt(G, beta=popart_beta, init_nu=popart_init_nu, min_sigma=popart_min_sigma,
                             min_sigma_ratio=popart_min_sigma_ratio)

        # ---- backbone: plain submodules, run once per batch, trained by both losses
        self.timestep_encoder = timestep_encoder
        self.trajectory_encoder = trajectory_encoder  # adapted by __setattr__

        self.convert_to_functional(actor_head, "actor_head", create_target_params=True)
        self.convert_to_functional(critic_head, "critic_head", create_target_params=True)
        if not 0.0 <= target_backbone_min_gamma < 1.0:
            raise ValueError(f"target_backbone_min_gamma={target_backbone_min_gamma}: must be in [0, 1)")
        self.target_backbone_min_gamma = float(target_backbone_min_gamma)
        self.target_backbone_all_gammas = bool(target_backbone_all_gammas)
        # the discounts whose TD targets read the encoders' copy [G] (the threshold is compared in the discounts'
        # float32, so 0.9999 reaches 0.9999): none when no discount reaches it, else all of them or those that do
        reach = self.gammas >= self.target_backbone_min_gamma
        self.target_backbone = bool(target_backbone) and bool(reach.any())
        copy_gammas = (reach | self.target_backbone_all_gammas) & self.target_backbone
        self.register_buffer("_copy_gammas", copy_gammas, persistent=False)
        self._mixed_targets = self.target_backbone and not bool(self._copy_gammas.all())
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}: expected one of {REDUCTIONS}")
        if actor_encoder_grad not in ACTOR_ENCODER_GRADS:
            raise ValueError(f"actor_encoder_grad={actor_encoder_grad!r}: expected one of {ACTOR_ENCODER_GRADS}")
        self.actor_encoder_grad = actor_encoder_grad
        self.reduction = reduction
        if self.target_backbone:  # SoftUpdate pairs it with the `backbone_params` property
            self._copy_backbone_to_target()
            self._has_update_associated["backbone"] = False  # TorchRL warns until a target updater is attached

    def _apply(self, fn, *args, **kwargs):
        """`.to(device)` / `.cuda()` / `.double()` also reach the heads' own buffers. `convert_to_functional` keeps
        the heads out of the submodules (their parameters live in `*_params` and move with the loss), but what
        runs outside a functional call reads the module itself: the two-hot critic's `bins` (`to_value`,
        `labels`)."""
        out = super()._apply(fn, *args, **kwargs)
        for head in (self.actor_head, self.critic_head):
            for module in head.modules():
                for name, buf in module._buffers.items():
                    if buf is not None:
                        module._buffers[name] = fn(buf)
        return out

    # ------------------------------------------------------------------------------------------ factories
    @classmethod
    def multi_task(cls, timestep_encoder, trajectory_encoder, actor_head, critic_head=None, *,
                   action_space: ActionSpace, gammas=None, gamma: float = 0.999, num_critics: int = 4,
                   critic_kwargs: Optional[dict] = None, **kwargs) -> "AMAGOLoss":
        """The original's ``MultiTaskAgent`` defaults: online 0, offline 1, two-hot critic, K_a = 3.

        ``critic_head=None`` builds a ``TwoHotCritic(state_dim, action_dim, gammas, num_critics, **critic_kwargs)``
        on the trajectory encoder's ``emb_dim``."""
        if gammas is None:
            gammas = list(DEFAULT_MULTIGAMMAS) + [gamma]
        if critic_head is None:
            critic_head = TwoHotCritic(encoder_emb_dim(trajectory_encoder), action_space.dim, gammas, num_critics,
                                       **(critic_kwargs or {}))
        elif not isinstance(critic_head, TwoHotCritic):
            raise ValueError(f"multi_task expects a TwoHotCritic critic_head, got {type(critic_head).__name__}")
        defaults = dict(online_coeff=0.0, offline_coeff=1.0, num_actions_for_value_in_actor_loss=3)
        defaults.update(kwargs)
        return cls(timestep_encoder, trajectory_encoder, actor_head, critic_head, action_space=action_space,
                   gammas=gammas, **defaults)

    def __setattr__(self, name, value):
        if name == "trajectory_encoder" and isinstance(value, nn.Module):
            value = as_sequence_module(value)  # a bare encoder works, or the error names the wrapper to use
        super().__setattr__(name, value)
        if name in ("timestep_encoder", "trajectory_encoder") and getattr(self, "target_backbone", False):
            self._copy_backbone_to_target()  # a swapped encoder gets its own target copy (build updaters after)

    def _copy_backbone_to_target(self) -> None:
        self.target_backbone_params = TensorDictParams(self.backbone_params.detach().clone(), no_convert=True)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # no TorchRL value estimator: targets come from `nstep_return`

    def make_value_estimator(self, value_type=None, **hyperparams):
        """Refused with ``NotImplementedError``: AMAGO's TD targets are n-step returns for every discount at once
        (one critic output per gamma), from a REDQ-reduced, PopArt-denormalised target ensemble. A TorchRL value
        estimator computes one discount from one value network, so none can stand in. The discounts are
        ``AMAGOLoss(gammas=...)`` (the last is the acting gamma) and the return length ``n_step=...``."""
        raise NotImplementedError(
            f"AMAGOLoss has no TorchRL value estimator (asked for {value_type!r}): its TD targets are multi-gamma "
            f"n-step returns for all {self.gammas.numel()} discounts at once (gammas={self.gammas.tolist()}, one "
            f"critic output per gamma) from a REDQ-reduced, PopArt-denormalised target ensemble, which a TorchRL "
            f"ValueEstimator (one gamma, one value network) cannot compute. Set the discounts with "
            f"AMAGOLoss(gammas=[...]) (the last is the acting gamma) and the return length with AMAGOLoss(n_step=n); "
            f"for a TorchRL estimator, train our memory inside a TorchRL loss instead (docs/swapping.md)")

    # --------------------------------------------------------------------------------------------- keys
    def _input_pairs(self) -> list[tuple[NestedKey, NestedKey]]:
        """(key the encoders read, key of this batch) for every per-step model input of the T+1 sequence."""
        k, enc = self.tensor_keys, self.timestep_encoder
        mask_key = getattr(enc, "mask_key", K.MASK)
        rename = {getattr(enc, "prev_action_key", K.PREV_ACTION): k.prev_action,
                  getattr(enc, "prev_reward_key", K.PREV_REWARD): k.prev_reward}
        pairs = [(key, rename.get(key, key)) for key in enc.in_keys if key != mask_key]
        pairs.append((getattr(self.trajectory_encoder, "time_key", K.TIME_IDX), k.time_idx))
        return pairs

    @property
    def in_keys(self) -> list[NestedKey]:
        """Every batch key the loss reads (model inputs at the root and under ``"next"``, action, reward, ...)."""
        k = self.tensor_keys

        def under_next(key):
            return ("next", *(key if isinstance(key, tuple) else (key,)))

        keys: list = []
        for _, src in self._input_pairs():  # read at the root (step 0) and under "next" (steps 1..T)
            keys += [src, under_next(src)]
        keys += [k.action, k.reward, k.terminated, k.mask, under_next(k.is_init)]
        if self.n_step_stop_explored and self.n_step > 1:
            keys.append(k.explored)
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        """The keys ``forward`` writes: ``LOSS_KEYS`` first, then the detached diagnostics."""
        keys = list(self.LOSS_KEYS) + ["critic_loss_unweighted", "q_mean", "td_target_min", "td_target_max",
                                       "td_target_mean", "reward_mean", "valid_steps", "popart_mu", "popart_sigma",
                                       "policy_entropy"]
        if self.online_coeff > 0:
            keys.append("actor_online")
        if self.offline_coeff > 0:
            keys += ["actor_offline", "adv_mean", "filter_acceptance", "filter_mean", "logp_mean"]
        if self.cql_coeff > 0:
            keys.append("cql_gap")
        return keys

    # --------------------------------------------------------------------------------------------- inputs
    def _sequence(self, td: TensorDictBase, mask: torch.Tensor) -> TensorDictBase:
        """The T+1 model inputs, with this loss's key names mapped to the names the encoders read, plus
        ``is_init`` (True at position 0 and where a new trial starts) for TorchRL's recurrent modules."""
        seq = t_plus_one_sequence(td, self._input_pairs(), mask, getattr(self.timestep_encoder, "mask_key", K.MASK))
        init_key = getattr(self.trajectory_encoder, "init_key", K.IS_INIT)
        seq.set(init_key, init_sequence(td, self.tensor_keys.is_init, mask))
        return seq

    # ---------------------------------------------------------------------------------------------- heads
    @staticmethod
    def _call_with(module: nn.Module, params: TensorDictBase, *args, detach: bool = False) -> torch.Tensor:
        """module(*args) with `params`; `detach`: through detached copies (gradients reach the inputs only)."""
        if detach or (isinstance(params, TensorDictParams)
                      and not any(p.requires_grad for p in params.values(True, True))):
            # a functional call uses the tensors as given. `to_module` would hand them back as trainable
            # Parameters: SoftUpdate then refuses target params ("part of a graph"), and detached params would
            # get weight gradients computed (then dropped) in every backward
            return functional_call(module, {".".join(key) if isinstance(key, tuple) else key:
                                            v.detach() if detach else v for key, v in params.items(True, True)}, args)
        with params.to_module(module):
            return module(*args)

    def _actor(self, params: TensorDictBase, state: torch.Tensor) -> torch.Tensor:
        return self._call_with(self.actor_head, params, state)

    def _critic(self, params: TensorDictBase, state: torch.Tensor, action: Optional[torch.Tensor] = None):
        return self._call_with(self.critic_head, params, state, *(() if action is None else (action,)))

    def _sample(self, dist, k: int, reparam: bool) -> torch.Tensor:
        """k actions from `dist` as critic inputs [k, B, T, G, A] (discrete -> one-hot; reparam -> with grad)."""
        if self.action_space.discrete:
            if reparam:  # straight-through Gumbel-softmax (the original's DiscreteLikeContinuous.rsample)
                logits = dist.logits.unsqueeze(0).expand(k, *dist.logits.shape)
                return F.gumbel_softmax(logits, tau=self.gumbel_temperature, hard=True)
            return F.one_hot(dist.sample((k,)), self.action_space.dim).float()
        if reparam:
            return dist.rsample((k,))
        return dist.sample((k,)).float()

    def _values(self, out: torch.Tensor) -> torch.Tensor:
        """Critic output -> per-member value [..., C, G] in the critic's raw output space."""
        return self.critic_head.to_value(out) if self.two_hot else out

    # -------------------------------------------------------------------------------------------- forward
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        batch = self._read_batch(tensordict)
        packs = self.packable and self.reduction != "none" and packs_here(self.pack_windows, batch.mask)
        plan = plan_packing(batch.mask) if packs else None
        unpacked = batch
        if plan is None:
            emb = self._backbone(tensordict, batch.mask)  # [B, T+1, D]: ONE pass of both encoders
        else:  # the same windows in fewer rows: [R, T+1, D], the batch's steps moved to their packed places
            emb, batch = self._packed_backbone(tensordict, batch, plan)
        # s_{t+1} of the TD targets: the Polyak-averaged encoders' (target_backbone) or the online pass's
        target_next = self._target_states(tensordict, unpacked, plan) if self.target_backbone else None
        s, s_next = emb[:, :-1], emb[:, 1:].detach() if target_next is None else target_next
        actor_grad = self.actor_encoder_grad
        dist, params_next = self._policy_outputs(emb.detach() if actor_grad == "none" else emb, target_next)
        online = None  # the discounts that do not read the copy (target_backbone_all_gammas=False): s_{t+1}, pi there
        if self._mixed_targets:
            online_next = emb[:, 1:].detach()
            online = (online_next, self._next_policy_params(online_next))
        td_target, td_norm = self._targets(batch, s_next, params_next, online)
        critic_loss, critic = self._critic_loss(batch, s, td_target, td_norm)
        extra = {}  # only with "bc", so subclasses that override _actor_loss(batch, s, dist, critic) keep working
        if actor_grad == "bc":  # the DPG / entropy terms read pi on detached states: they move the actor head only
            extra["dist_dpg"] = self.actor_head.dist(self._actor(self.actor_head_params, s.detach()).float())
        actor_loss, terms = self._actor_loss(batch, s, dist, critic, **extra)
        out = TensorDict(
            {"loss_actor": actor_loss, "loss_critic": self.critic_loss_weight * critic_loss}, batch_size=[])
        with torch.no_grad():
            self._diagnostics(out, batch.mask, critic_loss, critic.q_sa, td_target, batch.reward, dist, **terms)
            if critic.cql_gap is not None:
                out.set("cql_gap", masked_mean(critic.cql_gap.detach(), batch.mask))
            td_error = self._td_error(critic, td_target, td_norm, batch.mask)
            if plan is not None:
                td_error = plan.unpack_steps(td_error, unpacked.mask.shape[0])
            with tensordict.unlock_() if tensordict.is_locked else contextlib.nullcontext():
                tensordict.set(self.tensor_keys.priority, td_error.unsqueeze(-1))
        return out

    def _read_batch(self, tensordict: TensorDictBase) -> AMAGOBatch:
        """Validate the ``[B, T]`` window and read mask, reward, terminated and the buffer action."""
        k = self.tensor_keys
        if tensordict.batch_dims != 2:
            raise ValueError(f"AMAGOLoss expects a [B, T] batch, got batch_size {tuple(tensordict.batch_size)}")
        B, T = tensordict.batch_size
        reward = tensordict.get(k.reward, None)
        term = tensordict.get(k.terminated, None)
        action = tensordict.get(k.action, None)
        for name, v in ((k.reward, reward), (k.terminated, term), (k.action, action)):
            if v is None:
                raise ValueError(f"AMAGOLoss: batch has no key {name!r}")
        reward, term = as_bt(reward, B, T, k.reward), as_bt(term, B, T, k.terminated)
        mask = self._step_mask(tensordict, B, T, reward.device)
        if "priority_weight" in tensordict.keys() and not getattr(self, "_warned_weights", False):
            self._warned_weights = True
            warnings.warn("AMAGOLoss does not apply the importance weights of a prioritized sampler "
                          "('priority_weight' in the batch): the update is unweighted (docs/api/objectives.md)")
        a_feat, a_idx = buffer_actions(action, mask, self.action_space, k.action)
        return AMAGOBatch(mask, reward, term, a_feat, a_idx, self._read_explored(tensordict, mask))

    def _read_explored(self, tensordict: TensorDictBase, mask: torch.Tensor) -> Optional[torch.Tensor]:
        """``[B, T]`` bool from the batch's ``explored`` entry when ``n_step_stop_explored`` needs it, else None."""
        if not (self.n_step_stop_explored and self.n_step > 1):
            return None
        key = self.tensor_keys.explored
        explored = tensordict.get(key, None)
        if explored is None:
            if not getattr(self, "_warned_explored", False):
                self._warned_explored = True
                warnings.warn(f"AMAGOLoss(n_step_stop_explored=True): the batch has no {key!r} entry, so n-step "
                              f"returns do not stop at exploration (this package's exploration modules write it; "
                              f"offline data has none)")
            return None
        return as_bt(explored, *mask.shape, key).bool() & mask

    def _step_mask(self, tensordict: TensorDictBase, B: int, T: int, device) -> torch.Tensor:
        """``[B, T]`` bool, False on padding, read as TorchRL's ``loss_mask_key`` says (see ``_AcceptedKeys.mask``).

        TorchRL's ``"auto"`` also reads ``"shifted_valid"`` (written by its value estimators where a bootstrapped
        target crosses an episode boundary); AMAGO's windows lie inside one trial and its n-step return stops at
        ``terminated`` and padding itself, so that entry is not read."""
        setting = self.loss_mask_key
        if setting is None:
            return torch.ones(B, T, dtype=torch.bool, device=device)
        names = list(dict.fromkeys([self.tensor_keys.mask, K.TORCHRL_MASK] if setting == "auto" else [setting]))
        mask = None
        for name in names:
            value = tensordict.get(name, None)
            if value is not None:
                value = as_bt(value, B, T, name).bool()
                mask = value if mask is None else mask & value
        if mask is None:  # an all-valid default would silently train on padding
            raise ValueError(
                f"AMAGOLoss: batch has no key {' or '.join(repr(n) for n in names)} (the validity mask, False on "
                f"padding; the sequence replay writes both 'mask' and ('collector', 'mask')). For windows without "
                f"padding (e.g. TorchRL's SliceSampler with strict_length=True) set loss.loss_mask_key = None, or pass "
                f"an all-True mask")
        return mask

    def _backbone(self, tensordict: TensorDictBase, mask: torch.Tensor) -> torch.Tensor:
        """Timestep + trajectory encoder over the T+1 sequence -> state embeddings [B, T+1, D]."""
        return self._encode(self._sequence(tensordict, mask))

    def _encode(self, seq: TensorDictBase) -> torch.Tensor:
        seq = self.trajectory_encoder(self.timestep_encoder(seq))
        return seq.get(getattr(self.trajectory_encoder, "out_key", K.STATE_EMB))

    @property
    def pack_windows(self) -> str:
        """Which batches are packed: one of ``packing.PACK_MODES``; set it with a mode or True / False."""
        return self._pack_windows

    @pack_windows.setter
    def pack_windows(self, value) -> None:
        self._pack_windows = pack_mode(value)

    @property
    def packable(self) -> bool:
        """Batches can be packed (``packing.py``): the trajectory encoder keeps windows apart, and `_backbone` is
        this class's (a subclass that replaces it gets one window per row, so its override always runs)."""
        return (bool(getattr(self.trajectory_encoder, "packable", False))
                and type(self)._backbone is AMAGOLoss._backbone)

    def _packed_backbone(self, tensordict: TensorDictBase, batch: AMAGOBatch, plan: PackPlan):
        """`_backbone` on the windows packed by `plan` -> (embeddings [R, T+1, D], the batch's steps [R, T])."""
        seq = plan.pack_sequence(self._sequence(tensordict, batch.mask),
                                 getattr(self.timestep_encoder, "mask_key", K.MASK),
                                 getattr(self.trajectory_encoder, "init_key", K.IS_INIT), K.SEGMENT)
        idx, explored = batch.action_index, batch.explored
        packed = AMAGOBatch(plan.step_valid, plan.pack_steps(batch.reward), plan.pack_steps(batch.terminated),
                            plan.pack_steps(batch.action_features), None if idx is None else plan.pack_steps(idx),
                            None if explored is None else plan.pack_steps(explored))
        return self._encode(seq), packed

    @property
    def backbone_params(self) -> TensorDict:
        """The encoders' parameters (the tensors themselves) as ``{"timestep_encoder": ..., "trajectory_encoder":
        ...}``; with ``target_backbone=True`` ``SoftUpdate`` moves ``target_backbone_params`` towards them."""
        return TensorDict({name: TensorDict(dict(getattr(self, name).named_parameters()), []).unflatten_keys(".")
                           for name in ("timestep_encoder", "trajectory_encoder")}, [])

    def _target_states(self, tensordict: TensorDictBase, batch: AMAGOBatch, plan: Optional[PackPlan]) -> torch.Tensor:
        """s_{t+1} [B, T, D] from the same backbone pass run on ``target_backbone_params`` (eval mode: no dropout,
        no input-statistics or power-iteration updates; no grad)."""
        modules = [getattr(self, name) for name in ("timestep_encoder", "trajectory_encoder")]
        modes = [m.training for m in modules]
        try:
            with torch.no_grad(), swapped_parameters(self, self.target_backbone_params):
                for m in modules:
                    m.eval()
                emb = (self._backbone(tensordict, batch.mask) if plan is None
                       else self._packed_backbone(tensordict, batch, plan)[0])
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        return emb[:, 1:]

    def _policy_outputs(self, emb: torch.Tensor, s_next: Optional[torch.Tensor] = None):
        """pi(.|s_t) as a distribution [B, T, G] (with grad) and the (target) actor's parameters at s_{t+1}
        (``s_next``: the target encoders' states, default the online ones, ``emb[:, 1:]``)."""
        if s_next is None and not self.use_target_actor:  # one actor pass over s_t and s_{t+1}
            params_full = self._actor(self.actor_head_params, emb).float()
            return self.actor_head.dist(params_full[:, :-1]), params_full[:, 1:].detach()
        params = self._actor(self.actor_head_params, emb[:, :-1]).float()
        return self.actor_head.dist(params), self._next_policy_params(emb[:, 1:].detach() if s_next is None else s_next)

    @torch.no_grad()
    def _next_policy_params(self, s_next: torch.Tensor) -> torch.Tensor:
        """The (target) actor's parameters at s_{t+1}, no grad."""
        head = self.target_actor_head_params if self.use_target_actor else self.actor_head_params
        return self._actor(head, s_next).float()

    @torch.no_grad()
    def _targets(self, batch: AMAGOBatch, s_next: torch.Tensor, params_next: torch.Tensor, online=None):
        """TD targets [B, T, G] (raw, reward-multiplied) and their PopArt-normalised form; updates PopArt.
        ``online``: (s_{t+1}, actor parameters there) of the online encoders, for the discounts that do not read
        the copy."""
        if online is None:
            td_target = self._raw_targets(batch, s_next, params_next)
        else:  # one REDQ draw for both, the plain loss's: each discount gets the members it would get without the copy
            pick = redq_members(s_next.shape[:-1], self.num_critics, self.num_critics_td, self.gammas.numel(),
                                s_next.device)
            td_target = torch.where(self._copy_gammas, self._raw_targets(batch, s_next, params_next, pick),
                                    self._raw_targets(batch, *online, pick))
        if self.use_popart:
            self.popart.update_stats(td_target, batch.mask)
            return td_target, self.popart.normalize_values(td_target)
        return td_target, td_target

    def _raw_targets(self, batch: AMAGOBatch, s_next: torch.Tensor, params_next: torch.Tensor,
                     pick: Optional[torch.Tensor] = None) -> torch.Tensor:
        """TD targets [B, T, G] from s_{t+1} and the (target) actor's parameters there; ``pick``: REDQ's members
        (``redq_reduce``; Tree Backup draws its own per action)."""
        dist_next = self.actor_head.dist(params_next)
        if self.tree_backup and self.n_step > 1:
            return self._tree_backup_targets(batch, s_next, dist_next)
        return nstep_return(batch.reward, batch.terminated, batch.mask, self._next_value(s_next, dist_next, pick),
                            self.gammas, self.n_step, self.reward_multiplier,
                            continues=self._continues(batch, dist_next))

    def _next_value(self, s_next: torch.Tensor, dist_next, pick: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T, G]`` raw target value of each step's successor: E_pi' of the target Q, REDQ-reduced (with the
        members ``pick`` when given)."""
        if self.q_per_action:
            q_next = self._critic(self.target_critic_head_params, s_next).float()  # [B, T, C, G, A]
            v_next = (q_next * dist_next.probs.unsqueeze(-3)).sum(-1)  # E_pi' Q, [B, T, C, G]
        else:
            a_next = self._sample(dist_next, self.k_critic, reparam=False)
            v_next = self._values(self._critic(self.target_critic_head_params, s_next, a_next).float()).mean(0)
        if self.use_popart and not self.two_hot:
            v_next = self.popart(v_next, normalized=False)  # old stats
        return redq_reduce(v_next, self.num_critics_td, use_min=self.online_coeff > 0, pick=pick)

    def _tree_backup_targets(self, batch: AMAGOBatch, s_next: torch.Tensor, dist_next) -> torch.Tensor:
        """``[B, T, G]`` raw Tree Backup targets from the per-action target Q, REDQ-reduced per action."""
        q_next = self._critic(self.target_critic_head_params, s_next).float()  # [B, T, C, G, A]
        q_next = redq_reduce(q_next.movedim(-1, -3), self.num_critics_td, use_min=self.online_coeff > 0)  # [B,T,A,G]
        if self.use_popart:
            q_next = self.popart(q_next, normalized=False)  # old stats; affine per gamma, so it commutes with min
        q_next = q_next.movedim(-2, -1)  # [B, T, G, A]
        probs = dist_next.probs  # [B, T, G, A]
        a_next = torch.cat([batch.action_index[:, 1:], batch.action_index[:, -1:]], 1)  # a_{t+1}; the last is unused
        a_next = a_next[:, :, None, None].expand(*probs.shape[:-1], 1)
        return tree_backup_return(batch.reward, batch.terminated, batch.mask, (q_next * probs).sum(-1),
                                  q_next.gather(-1, a_next).squeeze(-1), probs.gather(-1, a_next).squeeze(-1),
                                  self.gammas, self.n_step, self.reward_multiplier)

    def _continues(self, batch: AMAGOBatch, dist_next) -> Optional[torch.Tensor]:
        """``[B, T, G]`` bool for ``nstep_return``: may an n-step return go on through step t? False where the target
        policy at s_t rates the buffer action a_t below ``n_step_cut`` x its mode's probability (``n_step_cut``),
        where exploration changed a_t (``n_step_stop_explored``) and for gammas below ``n_step_min_gamma``."""
        if self.n_step == 1 or not (self.n_step_cut > 0 or batch.explored is not None or self.n_step_min_gamma > 0):
            return None
        B, T = batch.mask.shape
        keep = torch.ones(B, T - 1, self.gammas.numel(), dtype=torch.bool, device=batch.mask.device)
        if self.n_step_cut > 0:
            probs = dist_next.probs[:, :-1]  # pi(.|s_t) for t = 1..T-1 (dist_next is at s_{t+1} of step t)
            a = batch.action_index[:, 1:, None, None].expand(*probs.shape[:-1], 1)
            keep &= probs.gather(-1, a).squeeze(-1) >= self.n_step_cut * probs.amax(-1)
        if batch.explored is not None:
            keep &= ~batch.explored[:, 1:, None]
        if self.n_step_min_gamma > 0:
            keep &= self.gammas >= self.n_step_min_gamma
        return torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)  # step 0 is never an intermediate step

    def _critic_loss(self, batch: AMAGOBatch, s: torch.Tensor, td_target: torch.Tensor, td_norm: torch.Tensor):
        """Unweighted critic loss on Q(s, a_buffer) (PopArt MSE or two-hot cross-entropy) and the critic outputs."""
        q_all = None
        if self.q_per_action:
            q_all = self._critic(self.critic_head_params, s).float()  # [B, T, C, G, A]
            soft = batch.action_features.clamp(*self.discrete_clip)
            soft = soft / soft.sum(-1, keepdim=True)  # the original's softened one-hot buffer action
            q_sa = (q_all * soft[:, :, None, None, :]).sum(-1)  # [B, T, C, G]
        else:
            a_crit = batch.action_features
            if self.action_space.discrete:
                a_crit = a_crit.clamp(*self.discrete_clip)
                a_crit = a_crit / a_crit.sum(-1, keepdim=True)
            q_out = self._critic(self.critic_head_params, s, a_crit).float()
            q_sa = self._values(q_out) if self.two_hot else q_out
        if self.two_hot:
            labels = self.critic_head.labels(td_target)  # [B, T, G, bins]
            critic_el = -(labels.unsqueeze(2) * torch.log_softmax(q_out, -1)).sum(-1)  # [B, T, C, G]
        else:
            pred = self.popart(q_sa) if self.use_popart else q_sa
            critic_el = (pred - td_norm.unsqueeze(2)).square()
        cql_gap = None
        if self.cql_coeff > 0:  # per-action critic: pred is the softened buffer action's mix of these
            pred_all = self.popart(q_all.movedim(-1, 0)).movedim(0, -1) if self.use_popart else q_all
            cql_gap = torch.logsumexp(pred_all, -1) - pred  # [B, T, C, G]
            critic_el = critic_el + (self.cql_coeff * self.cql_scale) * cql_gap
        return self._reduce(critic_el, batch.mask), CriticOutputs(q_sa, q_all, cql_gap)

    def _td_error(self, critic: CriticOutputs, td_target: torch.Tensor, td_norm: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """``|Q(s, a_buffer) - TD target|`` per step ``[B, T]`` (0 on padding), TorchRL's priority signal: in the
        units the critic is trained in (PopArt-normalised when ``popart``), the largest over the critic ensemble (as
        TorchRL's SAC), averaged over the gammas."""
        q = critic.q_sa.detach()
        if not self.use_popart:
            pred, target = q, td_target
        else:
            pred = self.popart.normalize_values(q) if self.two_hot else self.popart(q)
            target = td_norm
        err = (pred - target.unsqueeze(2)).abs().amax(2).mean(-1)
        return torch.where(mask, err, torch.zeros((), dtype=err.dtype, device=err.device))

    def _reduce(self, element: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-step loss terms ``[B, T, ...]`` -> the loss under ``self.reduction`` (padding never counts)."""
        if self.reduction == "mean":
            return masked_mean(element, mask)
        per_step = element.reshape(*mask.shape, -1).mean(-1)
        per_step = torch.where(mask, per_step, torch.zeros((), dtype=per_step.dtype, device=per_step.device))
        return per_step.sum() if self.reduction == "sum" else per_step

    def _actor_loss(self, batch: AMAGOBatch, s: torch.Tensor, dist, critic: CriticOutputs, dist_dpg=None):
        """``online_coeff * DPG + offline_coeff * filtered BC`` -> (loss, per-step terms for the diagnostics).

        ``dist_dpg`` (``actor_encoder_grad="bc"``): pi from detached states, read by the DPG and entropy terms
        (the same values as ``dist``). The terms dict holds ``dpg``, ``bc``, ``adv``, ``weights``, ``logp``
        ([B, T, G] or None)."""
        bc_dist, dist = dist, (dist if dist_dpg is None else dist_dpg)
        B, T = batch.mask.shape
        G = self.gammas.numel()
        actor_el = torch.zeros((), device=s.device)
        q_pi = None  # E_pi Q(s, .) per member [B, T, C, G], raw critic output space
        if self.q_per_action:
            # critic evaluated on detached s with detached params == q_all.detach(): reuse it
            if self.online_coeff > 0 or self.offline_coeff > 0:
                probs = dist.probs if self.online_coeff > 0 else dist.probs.detach()
                q_pi = (critic.q_all.detach() * probs.unsqueeze(-3)).sum(-1)
        elif self.online_coeff > 0:
            a_pi = self._sample(dist, self.k_actor, reparam=True)
            q_out = self._call_with(self.critic_head, self.critic_head_params, s.detach(), a_pi, detach=True)
            q_pi = self._values(q_out.float()).mean(0)
        dpg = None
        if self.online_coeff > 0:
            q_min = q_pi.amin(2)  # min over all C critics, [B, T, G]
            if self.two_hot:
                dpg = -(self.popart.normalize_values(q_min) if self.use_popart else q_min)
            else:
                dpg = -(self.popart(q_min) if self.use_popart else q_min)
            actor_el = actor_el + self.online_coeff * dpg
        bc = adv = weights = logp = None
        if self.offline_coeff > 0:
            with torch.no_grad():
                if q_pi is None:
                    a_v = self._sample(dist, self.k_actor, reparam=False)
                    q_pi = self._values(self._critic(self.critic_head_params, s.detach(), a_v).float()).mean(0)
                adv = critic.q_sa.detach().mean(2) - q_pi.detach().mean(2)  # [B, T, G]
                weights = self.fbc_filter(adv).float()
            if self.action_space.discrete:
                logp = bc_dist.log_prob(batch.action_index.unsqueeze(-1).expand(B, T, G))
            else:
                a_feat = batch.action_features
                logp = bc_dist.log_prob(a_feat.unsqueeze(-2).expand(B, T, G, a_feat.shape[-1]))
            bc = -(weights * logp)
            actor_el = actor_el + self.offline_coeff * bc
        if self.entropy_coeff > 0:  # [B, T, G]: every gamma's policy
            actor_el = actor_el - self.entropy_coeff * dist.entropy()
        actor_el = actor_el.expand(B, T, G) if actor_el.ndim == 0 else actor_el
        return self._reduce(actor_el, batch.mask), dict(dpg=dpg, bc=bc, adv=adv, weights=weights, logp=logp)

    def _diagnostics(self, out, mask, critic_loss, q_sa, td_target, reward, dist, dpg=None, bc=None, adv=None,
                     weights=None, logp=None):
        """Detached logging scalars (no host sync). No name starts with ``loss``: TorchRL's ``Trainer`` sums every
        ``loss*`` entry, so only ``LOSS_KEYS`` may. The per-step means share one masked reduction (on a GPU every
        small op is a kernel launch)."""
        m3 = mask.unsqueeze(-1).expand_as(td_target)
        q_raw = q_sa.detach()
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
        per_step = {"td_target_mean": td_target[..., -1], "reward_mean": reward,
                    "policy_entropy": dist.entropy()[..., -1]}
        if dpg is not None:
            per_step["actor_online"] = dpg
        if bc is not None:
            per_step.update(actor_offline=bc, adv_mean=adv, filter_acceptance=(weights > 0), filter_mean=weights,
                            logp_mean=logp)
        B, T = mask.shape  # each a mean over its valid steps (and over its other dims: gammas, samples)
        rows = torch.stack([v.detach().float().reshape(B, T, -1).mean(-1) for v in per_step.values()])
        means = torch.where(mask, rows, 0.0).sum((1, 2)) / (valid + 1e-5)
        for key, value in zip(per_step, means.unbind(0)):
            out.set(key, value)
