"""``AMAGOLossIO``, the base class of ``AMAGOLoss``: its batch keys, reading a ``[B, T]`` window, the T+1 encoder
pass (packed or not), functional calls of the heads, TorchRL's reductions, and the constructor's checks."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Union

import torch
from tensordict import TensorDictBase, TensorDictParams
from tensordict.utils import NestedKey, unravel_key
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torchrl.objectives import LossModule

from .. import keys as K
from ..modules.heads import DiscreteCritic, PopArt, TwoHotCritic
from ..modules.trajectory.adapters import as_sequence_module
from ..spaces import ActionSpace
from .batch import (AMAGOBatch, as_bt, buffer_actions, cut_at_trial_starts, init_sequence, masked_mean,
                    refuse_multistep, t_plus_one_sequence)
from .packing import PackPlan, pack_mode, packs_here, plan_packing
from .target_encoders import ENCODERS, encoder_params

#: ``AMAGOLoss(reduction=...)``, TorchRL's names
REDUCTIONS = ("mean", "sum", "none")


class AMAGOLossIO(LossModule):
    """The plumbing under ``AMAGOLoss``; not a loss on its own."""

    actor_head: nn.Module
    actor_head_params: TensorDictParams
    target_actor_head_params: TensorDictParams
    critic_head: nn.Module
    critic_head_params: TensorDictParams
    target_critic_head_params: TensorDictParams

    @dataclass
    class _AcceptedKeys:
        """Batch keys of the loss (``loss.set_keys(...)``; defaults from ``torchrl_amago.keys``).

        Attributes:
            action (NestedKey): the buffer action a_t, in the env's encoding.
            reward (NestedKey), terminated (NestedKey): ``[B, T(, 1)]``; ``terminated`` stops bootstrapping.
            mask (NestedKey): ``[B, T]`` bool, False on padding; read as TorchRL's ``loss_mask_key`` says
                (``"auto"``: this key AND ``("collector", "mask")``, whichever are present; ``None``: all valid).
            time_idx, prev_action, prev_reward (NestedKey): encoder inputs, read at the root and under ``"next"``.
            is_init (NestedKey): read at the root and under ``"next"`` (optional): a window that crosses a trial
                start is cut there into one window per trial (``cut_at_trial_starts``).
            priority (NestedKey): written: the per-step TD error ``[B, T, 1]``."""

        action: NestedKey = K.ACTION
        reward: NestedKey = ("next", K.REWARD)
        terminated: NestedKey = ("next", K.TERMINATED)
        mask: NestedKey = K.MASK
        time_idx: NestedKey = K.TIME_IDX
        is_init: NestedKey = K.IS_INIT
        prev_action: NestedKey = K.PREV_ACTION
        prev_reward: NestedKey = K.PREV_REWARD
        priority: NestedKey = "td_error"

    default_keys = _AcceptedKeys
    #: the two differentiable terms; their sum is the objective (every other output is a detached diagnostic)
    LOSS_KEYS = ("loss_actor", "loss_critic")

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
        k, keys = self.tensor_keys, []
        for _, src in self._input_pairs():  # read at the root (step 0) and under "next" (steps 1..T)
            keys += [src, unravel_key(("next", src))]
        keys += [k.action, k.reward, k.terminated, k.mask, k.is_init, unravel_key(("next", k.is_init))]
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

    def read_batch(self, tensordict: TensorDictBase) -> AMAGOBatch:
        """Step 1: validate the ``[B, T]`` window and read mask, reward, terminated and the buffer action; rows that
        cross a trial start (TorchRL's rollouts and collector batches) are cut into one window per trial."""
        k = self.tensor_keys
        if tensordict.batch_dims != 2:
            raise ValueError(f"AMAGOLoss expects a [B, T] batch, got batch_size {tuple(tensordict.batch_size)}")
        B, T = tensordict.batch_size
        refuse_multistep(tensordict, "AMAGOLoss", "feed the one-step data and set AMAGOLoss(n_step=n)")
        reward, term, action = (tensordict.get(key, None) for key in (k.reward, k.terminated, k.action))
        for name, v in ((k.reward, reward), (k.terminated, term), (k.action, action)):
            if v is None:
                raise ValueError(f"AMAGOLoss: batch has no key {name!r}")
        reward, term = as_bt(reward, B, T, k.reward), as_bt(term, B, T, k.terminated)
        mask = self._step_mask(tensordict, B, T, reward.device)
        if not getattr(self, "_checked_prev_reward", False):
            self._checked_prev_reward = True  # once: a reward transform that breaks it does so in every batch
            self._check_prev_reward(tensordict, reward, mask)
        cut = cut_at_trial_starts(tensordict, mask, k.is_init, self.in_keys)
        if cut is not None:
            mask, reward, term, action = cut.mask, cut.cut(reward), cut.cut(term), cut.cut(action)
        if "priority_weight" in tensordict.keys() and not getattr(self, "_warned_weights", False):
            self._warned_weights = True
            warnings.warn("AMAGOLoss does not apply the importance weights of a prioritized sampler "
                          "('priority_weight' in the batch): the update is unweighted (docs/api/objectives.md)")
        a_feat, a_idx = buffer_actions(action, mask, self.action_space, k.action)
        return AMAGOBatch(mask, reward, term, a_feat, a_idx, cut)

    def _check_prev_reward(self, tensordict: TensorDictBase, reward: torch.Tensor, mask: torch.Tensor) -> None:
        """A ValueError where ``("next", prev_reward)`` (what the memory sees) is not the reward the critics learn:
        a reward transform applied after make_amago_env's (e.g. on a SerialEnv / ParallelEnv of its envs)."""
        k = self.tensor_keys
        prev = tensordict.get(("next", *(k.prev_reward if isinstance(k.prev_reward, tuple) else (k.prev_reward,))),
                              None)
        if prev is None or k.reward != ("next", K.REWARD) or (mask.is_cuda and torch.cuda.is_current_stream_capturing()):
            return
        prev, r = as_bt(prev, *mask.shape, k.prev_reward).float(), reward.float()
        bad = ((prev - r).abs() > 1e-5 * (1 + r.abs())) & mask
        if bool(bad.any()):
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"AMAGOLoss: ('next', {k.prev_reward!r}) is {prev[b, t]:.6g} where {k.reward!r} is "
                             f"{r[b, t]:.6g} (row {b}, step {t}): a reward transform after make_amago_env's transforms "
                             f"(e.g. on a SerialEnv / ParallelEnv of its envs) changes what the critics learn but not "
                             f"what the memory sees. Apply it to each env given to make_amago_env (scaling for the "
                             f"critics alone is AMAGOLoss(reward_multiplier=...))")

    def _step_mask(self, tensordict: TensorDictBase, B: int, T: int, device) -> torch.Tensor:
        """``[B, T]`` bool, False on padding, read as ``loss_mask_key`` says (``"shifted_valid"`` is not read)."""
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

    def _reduce(self, element: torch.Tensor, batch: AMAGOBatch) -> torch.Tensor:
        """Per-step loss terms ``[B, T, ...]`` of ``batch`` -> the loss under ``self.reduction`` (padding never counts;
        ``"none"``: per step of the input batch)."""
        mask = batch.mask
        if self.reduction == "mean":
            return masked_mean(element, mask)
        per_step = element.reshape(*mask.shape, -1).mean(-1)
        per_step = torch.where(mask, per_step, torch.zeros((), dtype=per_step.dtype, device=per_step.device))
        if self.reduction == "sum":
            return per_step.sum()
        return per_step if batch.cut is None else batch.cut.uncut(per_step)

    def _sequence(self, td: TensorDictBase, mask: torch.Tensor) -> TensorDictBase:
        """The T+1 model inputs under the names the encoders read, plus ``is_init`` (see :func:`init_sequence`)."""
        seq = t_plus_one_sequence(td, self._input_pairs(), mask, getattr(self.timestep_encoder, "mask_key", K.MASK))
        init_key = getattr(self.trajectory_encoder, "init_key", K.IS_INIT)
        seq.set(init_key, init_sequence(td, self.tensor_keys.is_init, mask))
        return seq

    def _backbone(self, tensordict: TensorDictBase, mask: torch.Tensor) -> torch.Tensor:
        """Timestep + trajectory encoder over the T+1 sequence, one window per row -> states ``[B, T+1, D]``."""
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
        """Batches can be packed: the trajectory encoder keeps windows apart and ``_backbone`` is not overridden."""
        return (bool(getattr(self.trajectory_encoder, "packable", False))
                and type(self)._backbone is AMAGOLossIO._backbone)

    def _packing_plan(self, mask: torch.Tensor) -> Optional[PackPlan]:
        """How this batch's windows share rows, or None: one window per row."""
        packs = self.packable and self.reduction != "none" and packs_here(self.pack_windows, mask)
        return plan_packing(mask) if packs else None

    def _encoder_pass(self, tensordict: TensorDictBase, batch: AMAGOBatch, plan: Optional[PackPlan]) -> torch.Tensor:
        """States ``[B, T+1, D]`` of the batch's windows (`_backbone`), or ``[R, T+1, D]`` on the rows of ``plan``."""
        td, mask = tensordict if batch.cut is None else batch.cut.td, batch.mask
        if plan is None:
            return self._backbone(td, mask)
        return self._encode(plan.pack_sequence(self._sequence(td, mask),
                                               getattr(self.timestep_encoder, "mask_key", K.MASK),
                                               getattr(self.trajectory_encoder, "init_key", K.IS_INIT), K.SEGMENT))

    @staticmethod
    def _pack_batch(batch: AMAGOBatch, plan: PackPlan) -> AMAGOBatch:
        """The batch's steps moved to their packed places ``[R, T]``."""
        idx = batch.action_index
        return AMAGOBatch(plan.step_valid, plan.pack_steps(batch.reward), plan.pack_steps(batch.terminated),
                          plan.pack_steps(batch.action_features), None if idx is None else plan.pack_steps(idx),
                          batch.cut)

    @property
    def backbone_params(self):
        """The encoders' parameters, the source of ``target_backbone_params`` (``target_encoders=True``)."""
        return encoder_params(self)

    def _copy_backbone_to_target(self) -> None:
        self.target_backbone_params = TensorDictParams(self.backbone_params.detach().clone(), no_convert=True)

    @staticmethod
    def _call_with(module: nn.Module, params: TensorDictBase, *args, detach: bool = False) -> torch.Tensor:
        """module(*args) with `params`; `detach`: through detached copies (gradients reach the inputs only)."""
        if detach or (isinstance(params, TensorDictParams)
                      and not any(p.requires_grad for p in params.values(True, True))):
            # a functional call uses the tensors as given (`to_module` would make them trainable Parameters)
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
        return dist.rsample((k,)) if reparam else dist.sample((k,)).float()

    def _values(self, out: torch.Tensor) -> torch.Tensor:
        """Critic output -> per-member value [..., C, G] in the critic's raw output space."""
        return self.critic_head.to_value(out) if self.two_hot else out

    def __setattr__(self, name, value):
        if name == "trajectory_encoder" and isinstance(value, nn.Module):
            value = as_sequence_module(value)  # a bare encoder works, or the error names the wrapper to use
        super().__setattr__(name, value)
        if name in ENCODERS and getattr(self, "target_encoders", False):
            self._copy_backbone_to_target()  # a swapped encoder gets its own target copy (build updaters after)

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` / ``.double()`` also reach the heads' own buffers (outside the submodules)."""
        out = super()._apply(fn, *args, **kwargs)
        for head in (self.actor_head, self.critic_head):
            for module in head.modules():
                for name, buf in module._buffers.items():
                    if buf is not None:
                        module._buffers[name] = fn(buf)
        return out

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # no TorchRL value estimator: targets come from `nstep_return`

    def make_value_estimator(self, value_type=None, **hyperparams):
        """Refused with a ``NotImplementedError`` that says why (one TorchRL estimator is one gamma, one network)."""
        call = ", ".join([*([repr(value_type)] if value_type is not None else []),
                          *(f"{k}={v!r}" for k, v in hyperparams.items())])
        raise NotImplementedError(
            f"AMAGOLoss has no TorchRL value estimator (make_value_estimator({call})): its TD targets are multi-gamma "
            f"n-step returns for all {self.gammas.numel()} discounts at once (gammas={self.gammas.tolist()}, one "
            f"critic output per gamma) from a REDQ-reduced, PopArt-denormalised target ensemble, which a TorchRL "
            f"ValueEstimator (one gamma, one value network) cannot compute. Set the discounts with "
            f"AMAGOLoss(gammas=[...]) (the last is the acting gamma) and the return length with AMAGOLoss(n_step=n); "
            f"for a TorchRL estimator, train our memory inside a TorchRL loss instead (docs/swapping.md)")


def check_gammas(gammas, gamma: float, default_multigammas) -> torch.Tensor:
    """The discounts ``[G]`` (default: ``default_multigammas + (gamma,)``), each in [0, 1)."""
    if gammas is None:
        gammas = list(default_multigammas) + [gamma]
    g = torch.as_tensor(list(gammas), dtype=torch.float32)
    if g.ndim != 1 or g.numel() < 1 or bool(((g < 0) | (g >= 1)).any()):
        raise ValueError(f"gammas must be a non-empty list of values in [0, 1), got {list(gammas)}")
    return g


def check_heads(actor_head: nn.Module, critic_head: nn.Module, space: ActionSpace, gammas: torch.Tensor):
    """-> (two_hot, q_per_action): the critic's kind, after checking both heads against the space and discounts."""
    if not isinstance(space, ActionSpace):
        raise ValueError(f"action_space must be a torchrl_amago.spaces.ActionSpace, got {type(space).__name__}")
    two_hot = isinstance(critic_head, TwoHotCritic)
    q_per_action = isinstance(critic_head, DiscreteCritic) and not two_hot
    if q_per_action and not space.discrete:
        raise ValueError(f"DiscreteCritic needs a discrete action space, got kind {space.kind!r}")
    if q_per_action and critic_head.num_actions != space.dim:
        raise ValueError(f"DiscreteCritic has num_actions={critic_head.num_actions} but the action space has "
                         f"{space.dim} actions")
    if not q_per_action and getattr(critic_head, "action_dim", space.dim) != space.dim:
        raise ValueError(f"critic action_dim={critic_head.action_dim} != action space dim {space.dim}")
    G = gammas.numel()
    for name, head in (("actor_head", actor_head), ("critic_head", critic_head)):
        hg = getattr(head, "num_gammas", G)
        if hg != G:
            raise ValueError(f"{name} was built for {hg} gammas but the loss uses {G}: {gammas.tolist()}")
    cg = getattr(critic_head, "gammas", None)
    if isinstance(cg, torch.Tensor) and (cg.shape != gammas.shape or not torch.allclose(cg.float().cpu(), gammas)):
        raise ValueError(f"critic_head gammas {cg.tolist()} differ from the loss gammas {gammas.tolist()}")
    return two_hot, q_per_action


def check_options(space: ActionSpace, actor_head: nn.Module, num_critics_td: int, online_coeff: float,
                  entropy_coeff: float, num_actions_for_value: tuple[int, int], reduction: str) -> None:
    """ValueErrors for options out of range or that the space or the actor cannot take."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: expected one of {REDUCTIONS}")
    if not 1 <= num_critics_td:
        raise ValueError(f"num_critics_td must be >= 1, got {num_critics_td}")
    if min(num_actions_for_value) < 1:
        raise ValueError("num_actions_for_value_in_critic_loss / _actor_loss must be >= 1")
    differentiable = bool(getattr(actor_head, "actions_differentiable", True)) or space.discrete
    if online_coeff > 0 and not differentiable:
        raise ValueError(f"online_coeff={online_coeff} > 0 needs reparameterisable actions; the "
                         f"{space.kind} policy has none: set online_coeff=0")
    if entropy_coeff < 0 or (entropy_coeff > 0 and not space.discrete):
        raise ValueError(f"entropy_coeff={entropy_coeff}: must be >= 0, and > 0 only for discrete actions (the "
                         f"{space.kind} policy's entropy has no closed form here)")


def check_cql_coeff(cql_coeff: float, q_per_action: bool) -> float:
    """``cql_coeff`` as a float, or a ValueError: it must be >= 0, and > 0 only with a per-action critic."""
    if cql_coeff < 0 or (cql_coeff > 0 and not q_per_action):
        raise ValueError(f"cql_coeff={cql_coeff}: must be >= 0, and > 0 only with a per-action critic (a "
                         f"DiscreteCritic with discrete actions, not two-hot): the term needs Q(s, .) of every action")
    return float(cql_coeff)


def popart_of(popart: Union[bool, PopArt], num_gammas: int) -> tuple[bool, PopArt]:
    """-> (is the critic PopArt-normalised, the layer). Off, the layer is still built (its statistics are logged)."""
    if isinstance(popart, PopArt):
        if popart.num_gammas != num_gammas:
            raise ValueError(f"popart was built for {popart.num_gammas} gammas but the loss uses {num_gammas}")
        return True, popart
    return bool(popart), PopArt(num_gammas)
