"""AMAGO's Transformer trajectory encoder: pre-norm + NormFormer layers, σ-reparam linears, absolute-time positions
and a per-env ring-buffer KV cache for step mode."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module_mod

from ..._optional import available, require
from ..common import activation as make_activation
from ..common import Dropout, normalization
from .base import TrajectoryEncoder, check_is_init, check_sequence_inputs, check_step_inputs
from .positional import FixedPosEmb, LearnablePosEmb, RotaryPosEmb
from .sigma_reparam import SigmaReparam

POS_EMBS = ("fixed", "learnable", "rope")
ATTENTIONS = ("auto", "sdpa", "flash")

# attend(q, k, v) with q/k/v [B, L, H, Dh] (already rotated) -> [B, L, H, Dh]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _linear(d_in: int, d_out: int, sigma_reparam: bool, bias: bool = True) -> nn.Linear:
    return SigmaReparam(d_in, d_out, bias=bias) if sigma_reparam else nn.Linear(d_in, d_out, bias=bias)


def _norm_fast(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`m(x)` without nn.Module.__call__ for the common cases (acting fast path only)."""
    if type(m) is nn.LayerNorm:
        p = m._parameters  # not m.weight: nn.Module.__getattr__ is a Python call per name, per step
        return F.layer_norm(x, m.normalized_shape, p["weight"], p["bias"], m.eps)
    if type(m) is nn.Identity:
        return x
    return m.forward(x)


def _linear_fast(m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`m(x)` for an eval, no-grad nn.Linear / SigmaReparam, reusing SigmaReparam's cached W_hat."""
    p = m._parameters
    return F.linear(x, m.cached_weight() if isinstance(m, SigmaReparam) else p["weight"], p["bias"])


def _act_fast(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, m.negative_slope) if type(m) is nn.LeakyReLU else m.forward(x)


def _has_hooks(mods: list[nn.Module]) -> bool:
    return (bool(_module_mod._global_forward_hooks or _module_mod._global_forward_pre_hooks)
            or any(m._forward_hooks or m._forward_pre_hooks for m in mods))


class AttentionLayer(nn.Module):
    """Packed QKV projection (no bias) -> qkv dropout -> optional RoPE -> attention -> head scaling -> out proj."""

    def __init__(self, d_model: int, n_heads: int, dropout_qkv: float = 0.0, head_scaling: bool = True,
                 sigma_reparam: bool = True, rope: RotaryPosEmb | None = None):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads  # TransformerTrajEncoder checks divisibility
        self.qkv = _linear(d_model, 3 * d_model, sigma_reparam, bias=False)
        self.drop_qkv = Dropout(dropout_qkv)
        self.head_scaler = nn.Parameter(torch.ones(1, 1, n_heads, 1), requires_grad=head_scaling)
        self.out_proj = _linear(d_model, d_model, sigma_reparam)
        self.rope = rope

    def forward(self, x: torch.Tensor, attend: Attend, rope_cs=None) -> torch.Tensor:
        b, l, _ = x.shape
        qkv = self.drop_qkv(self.qkv(x))
        if qkv.device.type == "cpu" and qkv.dtype in (torch.bfloat16, torch.float16):
            qkv = qkv.float()  # CPU attention runs in fp32 (`_seq_attend`): one cast here, not one per q, k, v
        q, k, v = qkv.view(b, l, 3, self.n_heads, self.head_dim).unbind(2)
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
        self.act = make_activation(activation, inplace=True)  # on ff1's fresh output
        self.drop_ff = Dropout(dropout_ff)

    def forward(self, x: torch.Tensor, attend: Attend, rope_cs=None) -> torch.Tensor:
        x = x + self.norm2(self.attn(self.norm1(x), attend, rope_cs))
        h = self.norm4(self.act(self.ff1(self.norm3(x))))
        return x + self.drop_ff(self.ff2(h))


class KVCacheState:
    """Per-env ring-buffer KV cache: k, v [layers, N, H, max_seq_len, Dh]; lengths [N] = tokens since the last reset."""

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
    """AMAGO's Transformer; `attention`: 'auto' (flash-attn on CUDA when installed), 'sdpa' or 'flash'."""

    packable = True  # `segment` ids keep windows packed into one row apart

    def __init__(self, input_dim: int, max_seq_len: int, d_model: int = 256, n_heads: int = 8, d_ff: int = 1024,
                 n_layers: int = 3, dropout_ff: float = 0.05, dropout_emb: float = 0.05, dropout_attn: float = 0.0,
                 dropout_qkv: float = 0.0, activation: str = "leaky_relu", norm: str = "layer",
                 pos_emb: str = "fixed", max_time_idx: int | None = None, sigma_reparam: bool = True,
                 normformer_norms: bool = True, head_scaling: bool = True, attention: str = "auto",
                 compile: bool = False):
        super().__init__(input_dim, max_seq_len)
        for name, value, choices in (("pos_emb", pos_emb, POS_EMBS), ("attention", attention, ATTENTIONS)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if attention == "flash":
            require("flash_attn", "flash-attn", "attention='flash'")
        self.attention = attention
        self._flash_installed = attention != "sdpa" and available("flash_attn")
        self.d_model, self.n_heads, self.head_dim, self.n_layers = d_model, n_heads, d_model // n_heads, n_layers
        self.emb_dim, self.pos_emb_type, self.dropout_attn = d_model, pos_emb, dropout_attn

        self.inp = nn.Linear(input_dim, d_model)
        self.pos_emb = (FixedPosEmb(d_model) if pos_emb == "fixed" else
                        LearnablePosEmb(d_model, max_time_idx) if pos_emb == "learnable" else None)
        self.rope = RotaryPosEmb(self.head_dim) if pos_emb == "rope" else None
        self.drop_emb = Dropout(dropout_emb)
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, n_heads, d_ff, dropout_ff, dropout_qkv, activation, norm, sigma_reparam,
                             normformer_norms, head_scaling, self.rope)
            for _ in range(n_layers)
        )
        self.norm = normalization(norm, d_model)
        self._run_layers_compiled = torch.compile(self._run_layers) if compile else None

    def _embed(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        if self.pos_emb is not None:
            h = h + self.pos_emb(t).to(h.dtype)
        return self.drop_emb(h)

    def _use_flash(self, x: torch.Tensor) -> bool:
        return self.attention == "flash" or (self.attention == "auto" and self._flash_installed and x.is_cuda)

    def _seq_attend(self, h: torch.Tensor, use_flash: bool, window: int | None,
                    segment: torch.Tensor | None = None) -> Attend:
        p = self.dropout_attn if self.training else 0.0
        if use_flash and segment is None:
            fa = require("flash_attn", "flash-attn", "attention='flash'")
            ws = (window - 1, 0) if window else (-1, -1)

            @torch.compiler.disable
            def attend(q, k, v):
                bf = torch.bfloat16
                return fa.flash_attn_func(q.to(bf), k.to(bf), v.to(bf), dropout_p=p, causal=True,
                                          window_size=ws).to(q.dtype)
            return attend

        allowed = None  # built once for every layer; None: plain causal attention
        if window is not None or segment is not None:
            i = torch.arange(h.shape[1], device=h.device)
            d = i[:, None] - i[None, :]
            allowed = (d >= 0) & (d < window) if window is not None else d >= 0
            if segment is not None:  # packed windows: attend only inside one's own window
                allowed = (allowed & (segment[:, :, None] == segment[:, None, :])).unsqueeze(1)  # [B, 1, T, T]

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p, is_causal=allowed is None)

        def attend(q, k, v):
            dtype = q.dtype
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            # on CPU, fp32 with autocast off: the CPU kernel's bf16 backward is slow at small head dims
            if q.device.type == "cpu" and (q.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
                with torch.autocast("cpu", enabled=False):
                    out = sdpa(q.float(), k.float(), v.float())
            else:
                out = sdpa(q, k, v)
            return out.transpose(1, 2).to(dtype)
        return attend

    def _run_layers(self, h: torch.Tensor, rope_cs, use_flash: bool, window: int | None,
                    segment: torch.Tensor | None = None) -> torch.Tensor:
        attend = self._seq_attend(h, use_flash, window, segment)
        for layer in self.layers:
            h = layer(h, attend, rope_cs)
        return self.norm(h)

    def forward(self, x: torch.Tensor, time_idx: torch.Tensor, window: int | None = None,
                segment: torch.Tensor | None = None) -> torch.Tensor:
        """Causal pass over [B, T]; `window`: sliding-window attention; `segment` [B, T] ids keep windows apart."""
        t = check_sequence_inputs(x, time_idx, self.input_dim)
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if segment is not None and segment.shape != t.shape:
            raise ValueError(f"segment must be [B, T] = {tuple(t.shape)}, got {tuple(segment.shape)}")
        h = self._embed(x, t)
        rope_cs = self.rope.cos_sin(t) if self.rope is not None else None
        run = self._run_layers_compiled or self._run_layers
        return run(h, rope_cs, self._use_flash(x), window, segment)

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

    def state_shapes(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Per env: ``k``, ``v`` ``[layers, heads, max_seq_len, head_dim]`` and ``length`` ``[1]`` int64."""
        kv = ((self.n_layers, self.n_heads, self.max_seq_len, self.head_dim), self.inp.weight.dtype)
        return {"k": kv, "v": kv, "length": ((1,), torch.long)}

    def state_to_tensors(self, state: KVCacheState) -> dict[str, torch.Tensor]:
        return {"k": state.k.transpose(0, 1), "v": state.v.transpose(0, 1), "length": state.lengths.unsqueeze(-1)}

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> KVCacheState:
        k, v, length = tensors["k"], tensors["v"], tensors["length"]
        if k.shape[1:] != self.state_shapes()["k"][0] or v.shape != k.shape:
            raise ValueError(f"KV cache entries must be [N, *{self.state_shapes()['k'][0]}] for this Transformer, got "
                             f"k {tuple(k.shape)} and v {tuple(v.shape)}")
        return KVCacheState(k.transpose(0, 1), v.transpose(0, 1), length.reshape(-1))

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
        # valid slots are a prefix [0, count): on CPU attend over the longest one, elsewhere the whole ring (no sync)
        smax = (int(count.max()) if n else 0) if x.device.type == "cpu" else cap
        slots, rows = state.index_helpers(x.device)
        # one additive mask per step, shared by all layers (a bool mask is re-converted by every SDPA call)
        mask = torch.zeros((n, 1, 1, smax), dtype=state.k.dtype, device=x.device).masked_fill_(
            (slots[:smax] >= count[:, None])[:, None, None, :], float("-inf"))  # [N, 1, 1, smax]
        if self._can_step_fast():  # acting: same numbers, fewer Python calls
            out = self._step_fast(x, t, state, rows, write, smax, mask)
            state.lengths += 1
            return out, state

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

    def _can_step_fast(self) -> bool:
        """Eval + no-grad + not compiling + no forward hooks on the bypassed modules: `_step_fast` applies."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return False
        return not _has_hooks(self._step_fast_plan()[0])

    def _step_fast_plan(self) -> tuple:
        """(every bypassed module, per-layer module tuples), cached as a plain attribute."""
        plan = self.__dict__.get("_step_fast_plan_cache")
        if plan is None:
            mods = [m for part in (self.inp, self.pos_emb, self.drop_emb, self.layers, self.norm) if part is not None
                    for m in part.modules()]
            per_layer = [(ly.norm1, ly.attn.qkv, ly.attn, ly.attn.out_proj, ly.norm2, ly.norm3, ly.ff1,
                          ly.act, ly.norm4, ly.ff2) for ly in self.layers]
            self.__dict__["_step_fast_plan_cache"] = plan = (mods, per_layer)
        return plan

    def _step_fast(self, x, t, state: KVCacheState, rows, write, smax: int, mask) -> torch.Tensor:
        """The module path's step with fewer Python calls; keep in sync with TransformerLayer / AttentionLayer."""
        n, nh, hd = x.shape[0], self.n_heads, self.head_dim
        h = _linear_fast(self.inp, x)
        if self.pos_emb is not None:
            h = h + self.pos_emb.forward(t).to(h.dtype)
        rope_cs = self.rope.cos_sin(t) if self.rope is not None else None  # [N, 1, Dh/2]: broadcast over heads
        for i, layer in enumerate(self._step_fast_plan()[1]):
            norm1, qkv, attn, out_proj, norm2, norm3, ff1, act, norm4, ff2 = layer
            q, k, v = _linear_fast(qkv, _norm_fast(norm1, h)).view(n, 3, nh, hd).unbind(1)
            if rope_cs is not None:
                q, k = RotaryPosEmb.rotate(q, *rope_cs), RotaryPosEmb.rotate(k, *rope_cs)
            kc, vc = state.k[i], state.v[i]                              # [N, H, S, Dh]
            kc[rows, :, write] = k.to(kc.dtype)
            vc[rows, :, write] = v.to(vc.dtype)
            a = F.scaled_dot_product_attention(q.unsqueeze(2).to(kc.dtype), kc[:, :, :smax], vc[:, :, :smax],
                                               attn_mask=mask).squeeze(2).to(q.dtype)  # [N, H, Dh]
            a = _linear_fast(out_proj, (attn._parameters["head_scaler"][0, 0] * a).reshape(n, -1))
            h = h + _norm_fast(norm2, a)
            h = h + _linear_fast(ff2, _norm_fast(norm4, _act_fast(act, _linear_fast(ff1, _norm_fast(norm3, h)))))
        return _norm_fast(self.norm, h)
