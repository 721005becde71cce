"""AMAGO's Transformer trajectory encoder: pre-norm + NormFormer layers, σ-reparam linears, absolute-time
positions, and a per-env ring-buffer KV cache for step mode (each step attends over its own cache; no
re-running of the window)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..._optional import available, require
from ..common import activation as make_activation
from ..common import normalization
from .base import TrajectoryEncoder, check_is_init, check_sequence_inputs, check_step_inputs
from .positional import FixedPosEmb, LearnablePosEmb, RotaryPosEmb
from .sigma_reparam import SigmaReparam

POS_EMBS = ("fixed", "learnable", "rope")
ATTENTIONS = ("auto", "sdpa", "flash")

# attend(q, k, v) with q/k/v [B, L, H, Dh] (already rotated) -> [B, L, H, Dh]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _linear(d_in: int, d_out: int, sigma_reparam: bool, bias: bool = True) -> nn.Linear:
    return SigmaReparam(d_in, d_out, bias=bias) if sigma_reparam else nn.Linear(d_in, d_out, bias=bias)


def _sdpa_fp32_on_cpu(q: torch.Tensor) -> bool:
    """On CPU, SDPA runs in fp32 with autocast off: the CPU flash kernel's bf16 backward is ~5x slower than its
    fp32 one at small head dims, and attention is a small share of the FLOPs."""
    return q.device.type == "cpu" and (q.dtype != torch.float32 or torch.is_autocast_enabled("cpu"))


class AttentionLayer(nn.Module):
    """Packed QKV projection (no bias) -> qkv dropout -> optional RoPE -> attention -> head scaling -> out proj."""

    def __init__(self, d_model: int, n_heads: int, dropout_qkv: float = 0.0, head_scaling: bool = True,
                 sigma_reparam: bool = True, rope: RotaryPosEmb | None = None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = _linear(d_model, 3 * d_model, sigma_reparam, bias=False)
        self.drop_qkv = nn.Dropout(dropout_qkv)
        self.head_scaler = nn.Parameter(torch.ones(1, 1, n_heads, 1), requires_grad=head_scaling)
        self.out_proj = _linear(d_model, d_model, sigma_reparam)
        self.rope = rope

    def forward(self, x: torch.Tensor, attend: Attend, rope_cs=None) -> torch.Tensor:
        b, l, _ = x.shape
        q, k, v = self.drop_qkv(self.qkv(x)).view(b, l, 3, self.n_heads, self.head_dim).unbind(2)
        if rope_cs is not None:
            q, k = RotaryPosEmb.rotate(q, *rope_cs), RotaryPosEmb.rotate(k, *rope_cs)
        out = self.head_scaler * attend(q, k, v)
        return self.out_proj(out.reshape(b, l, -1))


class TransformerLayer(nn.Module):
    """x + norm2(attn(norm1(x))); then x + drop(ff2(norm4(act(ff1(norm3(x))))))  (pre-norm + NormFormer)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout_ff: float, dropout_qkv: float,
                 activation: str, norm: str, sigma_reparam: bool, normformer_norms: bool, head_scaling: bool,
                 rope: RotaryPosEmb | None):
        super().__init__()
        self.attn = AttentionLayer(d_model, n_heads, dropout_qkv, head_scaling, sigma_reparam, rope)
        self.norm1 = normalization(norm, d_model)
        self.norm2 = normalization(norm, d_model) if normformer_norms else nn.Identity()
        self.norm3 = normalization(norm, d_model)
        self.norm4 = normalization(norm, d_ff) if normformer_norms else nn.Identity()
        self.ff1 = _linear(d_model, d_ff, sigma_reparam)
        self.ff2 = _linear(d_ff, d_model, sigma_reparam)
        self.act = make_activation(activation)
        self.drop_ff = nn.Dropout(dropout_ff)

    def forward(self, x: torch.Tensor, attend: Attend, rope_cs=None) -> torch.Tensor:
        x = x + self.norm2(self.attn(self.norm1(x), attend, rope_cs))
        h = self.norm4(self.act(self.ff1(self.norm3(x))))
        return x + self.drop_ff(self.ff2(h))


class KVCacheState:
    """Per-env ring-buffer KV cache. k, v: [layers, N, H, max_seq_len, Dh]; lengths [N] int64 = tokens written
    since the env's last reset. The next token goes to slot `lengths % max_seq_len`; the valid slots are
    `[0, min(lengths, max_seq_len))`, so once full the oldest token is overwritten (FIFO) with no copying.
    Slot order does not matter: positions live in the keys themselves (absolute time_idx)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor):
        self.k, self.v, self.lengths = k, v, lengths

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def valid_len(self) -> torch.Tensor:
        """Number of cached tokens per env [N]."""
        return self.lengths.clamp(max=self.capacity)

    def index_helpers(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(arange(capacity), arange(N)) on `device`, built once per state (step mode reuses them every step)."""
        h = getattr(self, "_helpers", None)
        if h is None or h[0].device != torch.device(device):
            h = (torch.arange(self.capacity, device=device), torch.arange(self.batch_size, device=device))
            self._helpers = h
        return h


class TransformerTrajEncoder(TrajectoryEncoder):
    """AMAGO's Transformer over timestep embeddings.

    Sequence mode: causal self-attention over the [B, T] window (SDPA, or FlashAttention when installed and
    on CUDA). Step mode: one token per env, attending over that env's cached keys/values; the cache holds at
    most `max_seq_len` tokens including the current one and rolls (FIFO) once full.

    `attention`: 'auto' (flash when `flash_attn` is installed and the tensors are on CUDA, else SDPA),
    'sdpa', or 'flash' (requires flash-attn). Step mode always uses SDPA with a key mask over the cache.
    `compile=True` wraps the sequence-mode layer stack in `torch.compile` (off by default)."""

    def __init__(self, input_dim: int, max_seq_len: int, d_model: int = 256, n_heads: int = 8, d_ff: int = 1024,
                 n_layers: int = 3, dropout_ff: float = 0.05, dropout_emb: float = 0.05, dropout_attn: float = 0.0,
                 dropout_qkv: float = 0.0, activation: str = "leaky_relu", norm: str = "layer",
                 pos_emb: str = "fixed", max_time_idx: int | None = None, sigma_reparam: bool = True,
                 normformer_norms: bool = True, head_scaling: bool = True, attention: str = "auto",
                 compile: bool = False):
        super().__init__(input_dim, max_seq_len)
        if pos_emb not in POS_EMBS:
            raise ValueError(f"unknown pos_emb {pos_emb!r}; expected one of {POS_EMBS}")
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; expected one of {ATTENTIONS}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if attention == "flash":
            require("flash_attn", "flash-attn", "attention='flash'")
        self.attention = attention
        self._flash_installed = attention != "sdpa" and available("flash_attn")
        self.d_model, self.n_heads, self.head_dim, self.n_layers = d_model, n_heads, d_model // n_heads, n_layers
        self.emb_dim = d_model
        self.pos_emb_type = pos_emb
        self.dropout_attn = dropout_attn

        self.inp = nn.Linear(input_dim, d_model)
        self.pos_emb = None
        self.rope = None
        if pos_emb == "fixed":
            self.pos_emb = FixedPosEmb(d_model)
        elif pos_emb == "learnable":
            self.pos_emb = LearnablePosEmb(d_model, max_time_idx)
        else:
            self.rope = RotaryPosEmb(self.head_dim)
        self.drop_emb = nn.Dropout(dropout_emb)
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, n_heads, d_ff, dropout_ff, dropout_qkv, activation, norm, sigma_reparam,
                             normformer_norms, head_scaling, self.rope)
            for _ in range(n_layers)
        )
        self.norm = normalization(norm, d_model)
        self._run_layers_compiled = torch.compile(self._run_layers) if compile else None

    # ---------------------------------------------------------------- shared pieces
    def _embed(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        if self.pos_emb is not None:
            h = h + self.pos_emb(t).to(h.dtype)
        return self.drop_emb(h)

    def _use_flash(self, x: torch.Tensor) -> bool:
        if self.attention == "flash":
            return True
        return self.attention == "auto" and self._flash_installed and x.is_cuda

    def _seq_attend(self, use_flash: bool, window: int | None) -> Attend:
        p = self.dropout_attn if self.training else 0.0
        if use_flash:
            fa = require("flash_attn", "flash-attn", "attention='flash'")
            ws = (window - 1, 0) if window else (-1, -1)

            @torch.compiler.disable
            def attend(q, k, v):
                bf = torch.bfloat16
                return fa.flash_attn_func(q.to(bf), k.to(bf), v.to(bf), dropout_p=p, causal=True,
                                          window_size=ws).to(q.dtype)
            return attend

        def sdpa(q, k, v):
            if window is None:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            i = torch.arange(q.shape[2], device=q.device)
            d = i[:, None] - i[None, :]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=(d >= 0) & (d < window), dropout_p=p)

        def attend(q, k, v):
            dtype = q.dtype
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if _sdpa_fp32_on_cpu(q):
                with torch.autocast("cpu", enabled=False):
                    out = sdpa(q.float(), k.float(), v.float())
            else:
                out = sdpa(q, k, v)
            return out.transpose(1, 2).to(dtype)
        return attend

    def _run_layers(self, h: torch.Tensor, rope_cs, use_flash: bool, window: int | None) -> torch.Tensor:
        attend = self._seq_attend(use_flash, window)
        for layer in self.layers:
            h = layer(h, attend, rope_cs)
        return self.norm(h)

    # ---------------------------------------------------------------- sequence mode
    def forward(self, x: torch.Tensor, time_idx: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """Causal pass over [B, T]. `window` (optional) limits each token to the last `window` tokens including
        itself (sliding-window attention): with window=max_seq_len this equals step mode with a rolling cache."""
        t = check_sequence_inputs(x, time_idx, self.input_dim)
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        h = self._embed(x, t)
        rope_cs = self.rope.cos_sin(t) if self.rope is not None else None
        run = self._run_layers_compiled or self._run_layers
        return run(h, rope_cs, self._use_flash(x), window)

    # ---------------------------------------------------------------- step mode
    def init_state(self, batch_size: int, device=None) -> KVCacheState:
        p = self.inp.weight
        device = p.device if device is None else torch.device(device)
        shape = (self.n_layers, batch_size, self.n_heads, self.max_seq_len, self.head_dim)
        return KVCacheState(torch.zeros(shape, device=device, dtype=p.dtype),
                            torch.zeros(shape, device=device, dtype=p.dtype),
                            torch.zeros(batch_size, device=device, dtype=torch.long))

    def reset_state(self, state: KVCacheState, is_init: torch.Tensor) -> KVCacheState:
        is_init = check_is_init(is_init, state.batch_size).to(state.lengths.device)
        state.lengths.masked_fill_(is_init, 0)
        return state

    def step(self, x: torch.Tensor, time_idx: torch.Tensor, state: KVCacheState) -> tuple[torch.Tensor, KVCacheState]:
        t = check_step_inputs(x, time_idx, self.input_dim)
        if not isinstance(state, KVCacheState):
            raise ValueError(f"Transformer step mode needs a KVCacheState from init_state(), got {type(state).__name__}")
        n = x.shape[0]
        if state.batch_size != n:
            raise ValueError(f"state was built for {state.batch_size} envs but x has {n} rows")
        cap = state.capacity
        write = state.lengths % cap                                   # ring slot of the new token [N]
        count = (state.lengths + 1).clamp(max=cap)                    # valid tokens incl. the new one [N]
        # valid slots are a prefix [0, count). On CPU, read the longest prefix (a cheap host read) so short
        # trials attend over few slots; on accelerators attend over the whole ring to avoid a device sync.
        smax = (int(count.max()) if n else 0) if x.device.type == "cpu" else cap
        slots, rows = state.index_helpers(x.device)
        # one additive mask per step, shared by all layers (a bool mask is re-converted by every SDPA call)
        mask = torch.zeros((n, 1, 1, smax), dtype=state.k.dtype, device=x.device).masked_fill_(
            (slots[:smax] >= count[:, None])[:, None, None, :], float("-inf"))  # [N, 1, 1, smax]

        def make_attend(i: int) -> Attend:
            def attend(q, k, v):
                kc, vc = state.k[i], state.v[i]                      # [N, H, S, Dh]
                kc[rows, :, write] = k[:, 0].to(kc.dtype)
                vc[rows, :, write] = v[:, 0].to(vc.dtype)
                out = F.scaled_dot_product_attention(q.transpose(1, 2).to(kc.dtype), kc[:, :, :smax],
                                                     vc[:, :, :smax], attn_mask=mask)
                return out.transpose(1, 2).to(q.dtype)
            return attend

        h = self._embed(x.unsqueeze(1), t.unsqueeze(1))
        rope_cs = self.rope.cos_sin(t.unsqueeze(1)) if self.rope is not None else None
        for i, layer in enumerate(self.layers):
            h = layer(h, make_attend(i), rope_cs)
        state.lengths += 1
        return self.norm(h).squeeze(1), state
