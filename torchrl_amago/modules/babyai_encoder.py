"""BabyAI timestep encoder (AMAGO's ``BabyTstepEncoder``): image, mission-token and extras branches, concatenated."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from tensordict.utils import NestedKey, unravel_key
from torch import nn

from .cnn import GridworldCNN, NatureCNN
from .common import normalization, symlog
from .common import activation as make_activation
from .timestep import TimestepEncoderBase, _action_dim_from_spec, obs_shapes_from_spec

#: default mission vocabulary size: blank + unknown + the 29 words of the original's BabyAI vocabulary
DEFAULT_VOCAB_SIZE = 31


class BabyAITimestepEncoder(TimestepEncoderBase):
    """Image + mission tokens + extra features + rl2s -> ``tstep_emb`` ``[*, emb_dim]``. Keys in: ``image_key``,
    ``mission_key``, ``extra_key`` (None: no extras), ``prev_action``, ``prev_reward``."""

    def __init__(self, obs_shapes: Mapping[NestedKey, tuple], action_dim: int, *, image_key: NestedKey = "image",
                 mission_key: NestedKey = "mission", extra_key: NestedKey | None = "extra", image_mode: str = "auto",
                 grid_net: str = "cnn", grid_vocab: int = 16, cell_dim: int = 8, img_features: int = 128,
                 vocab_size: int = DEFAULT_VOCAB_SIZE, token_dim: int = 16, mission_net: str = "flat",
                 mission_hidden: int = 64, mission_dim: int = 48, extras_dim: int = 16, emb_dim: int = 256,
                 activation: str = "leaky_relu", out_norm: str | None = "layer", hide_rl2s: bool = False,
                 hide_rewards: bool = False, **keys):
        super().__init__(obs_shapes, action_dim, hide_rl2s=hide_rl2s, hide_rewards=hide_rewards, **keys)
        self.image_key, self.mission_key = unravel_key(image_key), unravel_key(mission_key)
        self.extra_key = None if extra_key is None else unravel_key(extra_key)
        need = [self.image_key, self.mission_key] + ([self.extra_key] if self.extra_key is not None else [])
        missing = [k for k in need if k not in self.obs_shapes]
        if missing:
            raise ValueError(f"BabyAITimestepEncoder: obs_shapes lacks {missing}; it has {list(self.obs_shapes)}")
        extra_keys = sorted(set(self.obs_shapes) - set(need), key=str)
        if extra_keys:
            raise ValueError(f"BabyAITimestepEncoder reads only {need}; drop {extra_keys} from obs_shapes")
        img_shape = self.obs_shapes[self.image_key]
        if len(img_shape) != 3:
            raise ValueError(f"BabyAITimestepEncoder: {self.image_key!r} must be [H, W, C], got {img_shape}")
        if len(self.obs_shapes[self.mission_key]) != 1:
            raise ValueError(f"BabyAITimestepEncoder: {self.mission_key!r} must be [L] tokens, got "
                             f"{self.obs_shapes[self.mission_key]}")
        if image_mode == "auto":
            image_mode = "pixels" if img_shape[0] > 22 else "grid"
        if image_mode not in ("grid", "pixels"):
            raise ValueError(f"image_mode must be 'grid', 'pixels' or 'auto', got {image_mode!r}")
        if grid_net not in ("cnn", "mlp"):
            raise ValueError(f"grid_net must be 'cnn' or 'mlp', got {grid_net!r}")
        if mission_net not in ("flat", "rnn"):
            raise ValueError(f"mission_net must be 'flat' or 'rnn', got {mission_net!r}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        H, W, C = img_shape
        self.image_mode, self.mission_net, self.vocab_size = image_mode, mission_net, vocab_size
        self.grid_net, self.grid_vocab = (grid_net if image_mode == "grid" else None), grid_vocab
        # image branch
        if image_mode == "grid":
            self.cell_emb = nn.Embedding(C * grid_vocab, cell_dim)
            self.register_buffer("_channel_offset", torch.arange(C) * grid_vocab, persistent=False)
            if grid_net == "cnn":
                self.cnn = GridworldCNN(cell_dim, act=activation)
            else:  # flatten [cell_dim, H, W] -> one hidden layer (its activation included)
                self.cnn = nn.Sequential(nn.Flatten(1), nn.Linear(cell_dim * H * W, 2 * img_features),
                                         make_activation(activation))
            cnn_in = (cell_dim, H, W)
        else:
            self.cell_emb = None
            self.cnn = NatureCNN(C, act=activation)
            cnn_in = (C, H, W)
        with torch.no_grad():
            cnn_out = self.cnn(torch.zeros(1, *cnn_in)).flatten(1).shape[-1]
        self.img_proj = nn.Linear(cnn_out, img_features)
        # mission branch
        L = self.obs_shapes[self.mission_key][0]
        self.token_emb = nn.Embedding(vocab_size, token_dim)
        if mission_net == "flat":
            self.mission_mlp = nn.Sequential(nn.Linear(L * token_dim, mission_hidden), make_activation(activation),
                                             nn.Linear(mission_hidden, mission_dim))
            self.mission_rnn = None
        else:
            self.mission_rnn = nn.GRU(token_dim, mission_hidden, batch_first=True)
            self.mission_mlp = nn.Linear(mission_hidden, mission_dim)
        self.mission_norm = nn.LayerNorm(mission_dim)
        # extras branch
        n_extra = math.prod(self.obs_shapes[self.extra_key]) if self.extra_key is not None else 0
        self.extras_mlp = nn.Sequential(nn.Linear(n_extra + 1 + action_dim, 32), make_activation(activation),
                                        nn.Linear(32, extras_dim), make_activation(activation))
        self.act = make_activation(activation)
        self.out = nn.Linear(img_features + mission_dim + extras_dim, emb_dim)
        self.out_norm = normalization(out_norm, emb_dim)
        self.emb_dim = emb_dim

    @classmethod
    def from_specs(cls, observation_spec, action_spec, obs_keys: Iterable[NestedKey] | None = None, **kwargs):
        """Build from env specs; by default reads ``image_key``, ``mission_key`` and ``extra_key`` (if present)."""
        if obs_keys is None:
            leaves = {unravel_key(k) for k in observation_spec.keys(True, True)}
            obs_keys = [unravel_key(kwargs.get(f"{name}_key", name)) for name in ("image", "mission")]
            extra = kwargs.get("extra_key", "extra")
            if extra is not None and unravel_key(extra) in leaves:
                obs_keys.append(unravel_key(extra))
            elif extra is not None:
                kwargs["extra_key"] = None
        return cls(obs_shapes_from_spec(observation_spec, obs_keys), _action_dim_from_spec(action_spec), **kwargs)

    def encode_image(self, img: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[M, H, W, C] -> [M, img_features]."""
        if self.image_mode == "grid":
            idx = img.long().clamp(0, self.grid_vocab - 1) + self._channel_offset  # [M, H, W, C]
            x = self.cell_emb(idx).sum(-2).to(dtype).permute(0, 3, 1, 2)  # [M, cell_dim, H, W]
        else:
            x = img.to(dtype).permute(0, 3, 1, 2)
            if img.dtype == torch.uint8:
                x = x / 128.0 - 1.0
        return self.img_proj(self.cnn(x).flatten(1))

    def encode_mission(self, tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[M, L] ints -> [M, mission_dim]."""
        e = self.token_emb(tokens.long().clamp(0, self.vocab_size - 1)).to(dtype)  # [M, L, token_dim]
        h = e.flatten(1) if self.mission_rnn is None else self.mission_rnn(e)[1][-1]  # flat tokens or the GRU's last h
        return self.mission_norm(self.mission_mlp(h))

    def encode(self, obs, rl2s, mask):
        lead = rl2s.shape[:-1]
        dtype = rl2s.dtype
        img = obs[self.image_key]
        img = img.reshape(-1, *img.shape[len(lead):])
        tokens = obs[self.mission_key].reshape(-1, obs[self.mission_key].shape[-1])
        extras = [symlog(rl2s)]
        if self.extra_key is not None:
            extras.append(obs[self.extra_key].reshape(*lead, -1).to(dtype))
        x_img = self.encode_image(img, dtype).reshape(*lead, -1)
        x_mis = self.encode_mission(tokens, dtype).reshape(*lead, -1)
        x_ext = self.extras_mlp(torch.cat(extras, -1))
        return self.out_norm(self.out(torch.cat([self.act(x_img), x_mis, x_ext], -1)))
