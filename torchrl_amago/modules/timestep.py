"""Timestep encoders: observation + rl2s `[prev_reward, prev_action]` -> `tstep_emb`, on any leading batch shape."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey, unravel_key
from torch import nn

from .. import keys as K
from ..spaces import action_space_from_spec
from .cnn import make_backbone, random_shift
from .common import MLP, normalization, symlog
from .common import activation as make_activation
from .input_norm import InputNorm

# never observations for `from_specs` (nor are `episode_*` keys or keys starting with '_')
BOOKKEEPING_KEYS = K.NOT_OBSERVATIONS


def _key_str(key: NestedKey) -> str:
    return key if isinstance(key, str) else ".".join(key)


def _is_bookkeeping(key: NestedKey) -> bool:
    parts = (key,) if isinstance(key, str) else tuple(key)
    return (_key_str(key) in BOOKKEEPING_KEYS or parts[-1] in BOOKKEEPING_KEYS or parts[-1].startswith("episode_")
            or any(p.startswith("_") for p in parts))


def default_obs_keys(observation_spec) -> list[NestedKey]:
    """Every tensor leaf of `observation_spec` except the bookkeeping keys and keys starting with '_'."""
    from torchrl.data import NonTensor

    return [unravel_key(key) for key in observation_spec.keys(include_nested=True, leaves_only=True)
            if not _is_bookkeeping(key) and not isinstance(observation_spec[key], NonTensor)]


def obs_shapes_from_spec(observation_spec, obs_keys: Iterable[NestedKey] | None = None) -> dict:
    """{key: per-step shape} from a (possibly batched) Composite observation spec."""
    keys = default_obs_keys(observation_spec) if obs_keys is None else [unravel_key(k) for k in obs_keys]
    if not keys:
        raise ValueError(f"no observation keys to encode in observation_spec (keys: "
                         f"{list(observation_spec.keys(True, True))}); pass obs_keys=[...]")
    leaves = {unravel_key(k) for k in observation_spec.keys(include_nested=True, leaves_only=True)}
    bdims = len(observation_spec.shape)
    shapes = {}
    for k in keys:
        if k not in leaves:
            raise ValueError(f"observation key {k!r} is not a tensor leaf of observation_spec; available: "
                             f"{sorted(_key_str(x) for x in leaves)}")
        shapes[k] = tuple(int(s) for s in observation_spec[k].shape[bdims:])
    return shapes


def _action_dim_from_spec(action_spec) -> int:
    from torchrl.data import Composite

    if isinstance(action_spec, Composite):
        if "action" not in action_spec.keys():
            raise ValueError(f"action_spec is a Composite without an 'action' entry: {list(action_spec.keys())}")
        action_spec = action_spec["action"]
    return action_space_from_spec(action_spec).dim


class TimestepEncoderBase(TensorDictModuleBase):
    """Key handling shared by the encoders (keys in: the observations, `prev_action`, `prev_reward`, `mask`; key out:
    `tstep_emb`). Subclasses implement `encode(obs: dict, rl2s [*, 1+A], mask [*] | None) -> [*, D]`."""

    def __init__(self, obs_shapes: Mapping[NestedKey, tuple], action_dim: int, hide_rl2s: bool = False,
                 hide_rewards: bool = False, prev_action_key: NestedKey = K.PREV_ACTION,
                 prev_reward_key: NestedKey = K.PREV_REWARD, mask_key: NestedKey = K.MASK,
                 out_key: NestedKey = "tstep_emb"):
        super().__init__()
        if not obs_shapes:
            raise ValueError("obs_shapes is empty: the timestep encoder needs at least one observation key")
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.obs_shapes = {unravel_key(k): tuple(int(s) for s in v) for k, v in obs_shapes.items()}
        self.obs_keys = sorted(self.obs_shapes, key=_key_str)
        self.action_dim, self.hide_rl2s, self.hide_rewards = action_dim, hide_rl2s, hide_rewards
        self.prev_action_key, self.prev_reward_key = unravel_key(prev_action_key), unravel_key(prev_reward_key)
        self.mask_key = unravel_key(mask_key)
        self.in_keys = list(self.obs_keys) + [self.prev_action_key, self.prev_reward_key]
        self.out_keys = [unravel_key(out_key)]

    @classmethod
    def from_specs(cls, observation_spec, action_spec, obs_keys: Iterable[NestedKey] | None = None, **kwargs):
        """Build from env specs (`env.observation_spec`, `env.action_spec`); see `default_obs_keys`."""
        return cls(obs_shapes_from_spec(observation_spec, obs_keys), _action_dim_from_spec(action_spec), **kwargs)

    def _get(self, td: TensorDictBase, key: NestedKey, what: str) -> torch.Tensor:
        x = td.get(key, None)
        if x is None:
            raise ValueError(f"{type(self).__name__}: {what} key {key!r} missing from the input TensorDict "
                             f"(keys: {sorted(_key_str(k) for k in td.keys(True, True))})")
        return x

    def _read(self, td: TensorDictBase):
        obs, lead = {}, None
        for k in self.obs_keys:
            x, shape = self._get(td, k, "observation"), self.obs_shapes[k]
            ok = x.ndim >= len(shape) and tuple(x.shape[x.ndim - len(shape):]) == shape
            this_lead = tuple(x.shape[: x.ndim - len(shape)]) if ok else None
            if not ok or (lead is not None and this_lead != lead):
                exp = f"[*{', ' if shape else ''}{', '.join(map(str, shape))}]" + (f" with * = {list(lead)}" if lead else "")
                raise ValueError(f"{type(self).__name__}: observation key {k!r} has shape {tuple(x.shape)}, "
                                 f"expected {exp}")
            lead, obs[k] = this_lead, x
        act = self._get(td, self.prev_action_key, "prev_action")
        if tuple(act.shape) != lead + (self.action_dim,):
            raise ValueError(f"{type(self).__name__}: {self.prev_action_key!r} has shape {tuple(act.shape)}, "
                             f"expected {list(lead + (self.action_dim,))}")
        rew = self._get(td, self.prev_reward_key, "prev_reward")
        if tuple(rew.shape) == lead:
            rew = rew.unsqueeze(-1)
        if tuple(rew.shape) != lead + (1,):
            raise ValueError(f"{type(self).__name__}: {self.prev_reward_key!r} has shape {tuple(rew.shape)}, "
                             f"expected {list(lead + (1,))}")
        p = next(self.parameters(), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        rl2s = torch.cat([rew.to(dtype), act.to(dtype)], -1)
        if self.hide_rewards:  # if/elif precedence as the original: both flags -> only the reward is hidden
            rl2s = torch.cat([torch.zeros_like(rl2s[..., :1]), rl2s[..., 1:]], -1)
        elif self.hide_rl2s:
            rl2s = torch.zeros_like(rl2s)
        mask = td.get(self.mask_key, None)
        if mask is not None:
            if tuple(mask.shape) != lead:
                raise ValueError(f"{type(self).__name__}: {self.mask_key!r} has shape {tuple(mask.shape)}, expected "
                                 f"the batch shape {list(lead)}")
            mask = mask.bool()
        return obs, rl2s, lead, mask

    def encode(self, obs: dict, rl2s: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        obs, rl2s, _, mask = self._read(td)
        td.set(self.out_keys[0], self.encode(obs, rl2s, mask))
        return td


class MLPTimestepEncoder(TimestepEncoderBase):
    """AMAGO's `FFTstepEncoder`: cat(obs, rl2s) -> InputNorm -> MLP -> out_norm; keys as `TimestepEncoderBase`."""

    def __init__(self, obs_shapes: Mapping[NestedKey, tuple], action_dim: int, n_layers: int = 2,
                 d_hidden: int = 512, d_output: int = 256, norm: str | None = None, out_norm: str | None = "layer",
                 activation: str = "leaky_relu", hide_rl2s: bool = False, hide_rewards: bool = False,
                 normalize_inputs: bool = True, auto_scale: bool = False, **keys):
        super().__init__(obs_shapes, action_dim, hide_rl2s=hide_rl2s, hide_rewards=hide_rewards, **keys)
        self.in_dim = sum(math.prod(self.obs_shapes[k]) for k in self.obs_keys) + 1 + action_dim
        if auto_scale:  # avoid bottlenecks on wide inputs
            d_hidden, d_output = max(d_hidden, self.in_dim), max(d_output, self.in_dim)
        self.in_norm = InputNorm(self.in_dim) if normalize_inputs else None
        self.mlp = MLP(self.in_dim, d_hidden, n_layers, d_output, act=activation, norm=norm)
        self.out_norm = normalization(out_norm, d_output)
        self.emb_dim = d_output

    def encode(self, obs, rl2s, mask):
        lead = rl2s.shape[:-1]
        x = torch.cat([obs[k].reshape(*lead, -1).to(rl2s.dtype) for k in self.obs_keys] + [rl2s], -1)
        if self.in_norm is not None:
            x = self.in_norm(x, mask)
        return self.out_norm(self.mlp(x))


class CNNTimestepEncoder(TimestepEncoderBase):
    """AMAGO's `CNNTstepEncoder` for one image key (HWC or CHW; uint8 scaled to x/128 - 1): cat(CNN features,
    Linear(symlog(rl2s))) -> Linear -> out_norm. `drqv2_aug` random-shifts `aug_pct_of_batch` of the sequences in
    training. Keys as :class:`TimestepEncoderBase` (in: the image key, `prev_action`, `prev_reward`)."""

    def __init__(self, obs_shapes: Mapping[NestedKey, tuple], action_dim: int, cnn_type: str = "nature",
                 channels_first: bool | None = None, img_features: int = 256, rl2_features: int = 12,
                 d_output: int = 256, out_norm: str | None = "layer", activation: str = "leaky_relu",
                 hide_rl2s: bool = False, hide_rewards: bool = False, drqv2_aug: bool = False,
                 aug_pct_of_batch: float = 0.75, aug_pad: int = 4, **keys):
        super().__init__(obs_shapes, action_dim, hide_rl2s=hide_rl2s, hide_rewards=hide_rewards, **keys)
        if len(self.obs_keys) != 1:
            raise ValueError(f"CNNTimestepEncoder encodes exactly one image key, got {self.obs_keys}; pass "
                             "obs_keys=[<image key>]")
        self.img_key = self.obs_keys[0]
        shape = self.obs_shapes[self.img_key]
        if len(shape) != 3:
            raise ValueError(f"CNNTimestepEncoder: image key {self.img_key!r} must have a 3-D per-step shape (HWC or "
                             f"CHW), got {shape}")
        if channels_first is None:  # the channel axis is the smaller end (3x64x64 -> CHW, 7x7x3 -> HWC)
            channels_first = shape[0] < shape[-1]
        if not 0.0 <= aug_pct_of_batch <= 1.0:
            raise ValueError(f"aug_pct_of_batch must be in [0, 1], got {aug_pct_of_batch}")
        self.channels_first, self.drqv2_aug = channels_first, drqv2_aug
        self.aug_pct_of_batch, self.aug_pad = aug_pct_of_batch, aug_pad
        c = shape[0] if channels_first else shape[-1]
        self.cnn = make_backbone(cnn_type, c, act=activation)
        with torch.no_grad():
            chw = shape if channels_first else (shape[2], shape[0], shape[1])
            cnn_out = self.cnn(torch.zeros(1, *chw)).flatten(1).shape[-1]
        self.img_proj = nn.Linear(cnn_out, img_features)
        self.rl2_proj = nn.Linear(1 + action_dim, rl2_features)
        self.act = make_activation(activation)
        self.merge = nn.Linear(img_features + rl2_features, d_output)
        self.out_norm = normalization(out_norm, d_output)
        self.emb_dim = d_output

    @classmethod
    def from_specs(cls, observation_spec, action_spec, obs_keys: Iterable[NestedKey] | None = None, **kwargs):
        """As the base, but with obs_keys=None and several observation keys it picks the only 3-D (image) one."""
        shapes = obs_shapes_from_spec(observation_spec, obs_keys)
        if obs_keys is None and len(shapes) > 1:
            images = {k: s for k, s in shapes.items() if len(s) == 3}
            if len(images) == 1:
                shapes = images
        return cls(shapes, _action_dim_from_spec(action_spec), **kwargs)

    def _n_clean(self, num_seqs: int) -> int:
        return max(min(math.ceil(num_seqs * (1.0 - self.aug_pct_of_batch)), num_seqs - 1), 0)

    def augment(self, img: torch.Tensor, num_seqs: int) -> torch.Tensor:
        """Random-shift the frames [num_seqs * L, C, H, W] of all but the first `_n_clean(num_seqs)` sequences."""
        start = self._n_clean(num_seqs) * (img.shape[0] // max(num_seqs, 1))
        if start >= img.shape[0]:
            return img
        return torch.cat([img[:start], random_shift(img[start:], self.aug_pad)], 0)

    def encode(self, obs, rl2s, mask):
        lead = rl2s.shape[:-1]
        img = obs[self.img_key]
        scale = img.dtype == torch.uint8
        img = img.reshape(-1, *img.shape[len(lead):]).to(rl2s.dtype)
        if not self.channels_first:
            img = img.permute(0, 3, 1, 2)
        if scale:
            img = img / 128.0 - 1.0
        if self.drqv2_aug and self.training:
            img = self.augment(img, lead[0] if len(lead) else 1)
        feat = self.img_proj(self.cnn(img).flatten(1)).reshape(*lead, -1)
        h = self.act(torch.cat([feat, self.rl2_proj(symlog(rl2s))], -1))
        return self.out_norm(self.merge(h))
