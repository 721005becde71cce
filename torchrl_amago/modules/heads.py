"""Actor and critic heads on the shared `state_emb`; gammas and critic members are tensor axes. Shapes: `*` any batch,
G gammas (index -1 acts), C ensemble size, A action dim."""
from __future__ import annotations

import torch
from torch import nn

from ..spaces import ActionSpace
from .common import MLP, debiased_ema_step, symexp, symlog
from .distributions import CONTINUOUS_OUTPUTS, DEFAULT_DISCRETE_CLIP, DiscreteOutput, MultiBinaryOutput
from .ensemble import EnsembleMLP


def _check_last_dim(x: torch.Tensor, dim: int, what: str):
    if x.shape[-1] != dim:
        raise ValueError(f"{what} must end in dim {dim}, got shape {tuple(x.shape)}")


def gamma_features(gammas: torch.Tensor) -> torch.Tensor:
    """The critic's gamma input feature symlog(1 / clamp(1 - gamma, 1e-6, 1)), shape [G, 1]."""
    return symlog(1.0 / (1.0 - gammas.double()).clamp(1e-6, 1.0)).float().unsqueeze(-1)


def _as_gammas(gammas) -> torch.Tensor:
    g = torch.as_tensor(gammas, dtype=torch.float32).flatten()
    if g.numel() < 1 or bool(((g < 0) | (g > 1)).any()):
        raise ValueError(f"gammas must be a non-empty 1-D sequence of values in [0, 1], got {gammas!r}")
    return g


class ActorHead(nn.Module):
    """MLP with one output group per gamma: forward(state [*, D]) -> params [*, G, P]; `dist`, `act` (last gamma)."""

    def __init__(self, state_dim: int, action_space: ActionSpace, num_gammas: int, d_hidden: int = 256,
                 n_layers: int = 2, activation: str = "leaky_relu", continuous_dist: str = "tanh_gaussian",
                 discrete_clip: tuple[float, float] = DEFAULT_DISCRETE_CLIP, dropout: float = 0.0):
        super().__init__()
        if not isinstance(action_space, ActionSpace):
            raise ValueError(f"action_space must be a torchrl_amago.spaces.ActionSpace, got {type(action_space).__name__}")
        if num_gammas < 1:
            raise ValueError(f"num_gammas must be >= 1, got {num_gammas}")
        if action_space.kind == "discrete":
            self.policy_output = DiscreteOutput(*discrete_clip)
        elif action_space.kind == "continuous":
            if continuous_dist not in CONTINUOUS_OUTPUTS:
                raise ValueError(f"unknown continuous_dist {continuous_dist!r}; expected one of {sorted(CONTINUOUS_OUTPUTS)}")
            self.policy_output = CONTINUOUS_OUTPUTS[continuous_dist]()
        elif action_space.kind == "multibinary":
            self.policy_output = MultiBinaryOutput()
        else:  # ActionSpace validates kinds; kept for subclasses of ActionSpace
            raise ValueError(f"unsupported action kind {action_space.kind!r}")
        self.state_dim, self.action_space, self.num_gammas = state_dim, action_space, num_gammas
        self.param_dim = self.policy_output.input_dimension(action_space.dim)
        self.net = MLP(state_dim, d_hidden, n_layers, num_gammas * self.param_dim, act=activation, dropout=dropout)

    @property
    def actions_differentiable(self) -> bool:
        return self.policy_output.actions_differentiable

    def forward(self, state_emb: torch.Tensor) -> torch.Tensor:
        _check_last_dim(state_emb, self.state_dim, "ActorHead input state_emb")
        return self.net(state_emb).unflatten(-1, (self.num_gammas, self.param_dim))

    def dist(self, params: torch.Tensor) -> torch.distributions.Distribution:
        _check_last_dim(params, self.param_dim, "actor params")
        return self.policy_output(params)

    @torch.no_grad()
    def act(self, params: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Action of the acting gamma: discrete int64 index [*]; continuous / multibinary float [*, A]."""
        if type(self.policy_output) is DiscreteOutput:  # acting hot path: no Distribution object per env step
            return self._act_discrete(params[..., -1, :], deterministic)
        d, kind = self.dist(params[..., -1, :]), self.action_space.kind
        a = (d.mode if kind in ("discrete", "multibinary") else d.mean) if deterministic else d.sample()
        return a.long() if kind == "discrete" else a

    def _act_discrete(self, params: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Same numbers as `dist(params).sample()` / `.mode` (a seeded sample included), without a Distribution."""
        _check_last_dim(params, self.param_dim, "actor params")
        out = self.policy_output
        probs = torch.softmax(params, dim=-1).clamp(out.clip_low, out.clip_high)
        probs = probs / probs.sum(-1, keepdim=True)
        if deterministic:
            return probs.argmax(-1)
        probs = probs / probs.sum(-1, keepdim=True)  # torch.distributions.Categorical normalises once more
        return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).reshape(probs.shape[:-1])


class DiscreteCritic(nn.Module):
    """DQN-style multi-gamma ensemble: forward(state [*, D]) -> q [*, C, G, A] (`zero_init_output`: Q starts at 0)."""

    def __init__(self, state_dim: int, num_actions: int, num_gammas: int, num_critics: int = 4, d_hidden: int = 256,
                 n_layers: int = 2, activation: str = "leaky_relu", dropout: float = 0.0,
                 zero_init_output: bool = True):
        super().__init__()
        if num_actions < 1 or num_gammas < 1 or num_critics < 1:
            raise ValueError(f"DiscreteCritic needs num_actions, num_gammas, num_critics >= 1, got "
                             f"({num_actions}, {num_gammas}, {num_critics})")
        self.state_dim, self.num_actions, self.num_gammas, self.num_critics = state_dim, num_actions, num_gammas, num_critics
        self.net = EnsembleMLP(num_critics, state_dim, d_hidden, n_layers, num_gammas * num_actions, activation, dropout)
        if zero_init_output:
            self.net.zero_output_()

    def forward(self, state_emb: torch.Tensor) -> torch.Tensor:
        _check_last_dim(state_emb, self.state_dim, "DiscreteCritic input state_emb")
        return self.net(state_emb).unflatten(-1, (self.num_gammas, self.num_actions))


class _ActionInputCritic(nn.Module):
    """Shared body of the action-input critics: input cat(state, gamma_feat, clamp(action, +-0.999)) per gamma."""

    def __init__(self, state_dim: int, action_dim: int, gammas, num_critics: int, d_hidden: int, n_layers: int,
                 d_out: int, activation: str, dropout: float, zero_init_output: bool):
        super().__init__()
        gammas = _as_gammas(gammas)
        if action_dim < 1 or num_critics < 1:
            raise ValueError(f"critic needs action_dim, num_critics >= 1, got ({action_dim}, {num_critics})")
        self.state_dim, self.action_dim, self.num_critics = state_dim, action_dim, num_critics
        self.num_gammas = gammas.numel()
        self.register_buffer("gammas", gammas)
        self.register_buffer("gamma_feat", gamma_features(gammas))
        self.net = EnsembleMLP(num_critics, state_dim + 1 + action_dim, d_hidden, n_layers, d_out, activation, dropout)
        if zero_init_output:
            self.net.zero_output_()

    def _run(self, state_emb: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """-> [..., C, G, d_out]; action [..., G, A] or [*, A] (every gamma); extra leading dims broadcast."""
        _check_last_dim(state_emb, self.state_dim, "critic input state_emb")
        _check_last_dim(action, self.action_dim, "critic input action")
        if action.ndim == state_emb.ndim:
            action = action.unsqueeze(-2)
        elif action.ndim < state_emb.ndim or action.shape[-2] not in (1, self.num_gammas):
            raise ValueError(f"critic action must be [*, A] or [*, G={self.num_gammas}, A] for a state of shape "
                             f"{tuple(state_emb.shape)}, got {tuple(action.shape)}")
        G, D = self.num_gammas, self.state_dim
        action = action.to(state_emb.dtype).clamp(-0.999, 0.999)
        lead = action.shape[:-2]
        ga = torch.cat([self.gamma_feat.to(state_emb.dtype).expand(*lead, G, 1), action.expand(*lead, G, self.action_dim)], -1)
        h = self.net.first_layer_partial(state_emb, 0, D, bias=True).unsqueeze(-3)  # [*, 1, C, H]
        h = h + self.net.first_layer_partial(ga, D, D + 1 + self.action_dim, bias=False)  # [..., G, C, H]
        return self.net.trunk(h).transpose(-3, -2)


class ContinuousCritic(_ActionInputCritic):
    """Q(s, a, gamma) ensemble (continuous, multi-binary): forward(state [*, D], action) -> q [*, C, G]."""

    def __init__(self, state_dim: int, action_dim: int, gammas, num_critics: int = 4, d_hidden: int = 256,
                 n_layers: int = 2, activation: str = "leaky_relu", dropout: float = 0.0,
                 zero_init_output: bool = False):
        super().__init__(state_dim, action_dim, gammas, num_critics, d_hidden, n_layers, 1, activation, dropout,
                         zero_init_output)

    def forward(self, state_emb: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self._run(state_emb, action).squeeze(-1)


class TwoHotCritic(_ActionInputCritic):
    """Distributional ensemble over return bins (AMAGO's `NCriticsTwoHot`): forward(state, action) -> logits."""

    def __init__(self, state_dim: int, action_dim: int, gammas, num_critics: int = 4, num_bins: int = 128,
                 min_return: float = -1e5, max_return: float = 1e5, use_symlog: bool = True,
                 label_type: str = "twohot", sigma: float = 0.75, init_value: float | None = None,
                 d_hidden: int = 256, n_layers: int = 2, activation: str = "leaky_relu", dropout: float = 0.0,
                 zero_init_output: bool = False):
        super().__init__(state_dim, action_dim, gammas, num_critics, d_hidden, n_layers, num_bins, activation, dropout,
                         zero_init_output)
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        if not min_return < max_return:
            raise ValueError(f"min_return must be < max_return, got ({min_return}, {max_return})")
        if label_type not in ("twohot", "hl_gauss"):
            raise ValueError(f"label_type must be 'twohot' or 'hl_gauss', got {label_type!r}")
        self.num_bins, self.use_symlog, self.label_type, self.sigma = num_bins, use_symlog, label_type, sigma
        lo, hi = self._fwd(torch.tensor(float(min_return))), self._fwd(torch.tensor(float(max_return)))
        self.register_buffer("bins", torch.linspace(float(lo), float(hi), num_bins))
        self.bin_width = (float(hi) - float(lo)) / (num_bins - 1)
        if init_value is not None:
            self._init_output_bias(init_value)

    def _fwd(self, x):
        return symlog(x) if self.use_symlog else x

    def _inv(self, x):
        return symexp(x) if self.use_symlog else x

    @torch.no_grad()
    def _init_output_bias(self, value: float):
        """Output bias = Gaussian logits around `value` (sigma = 4 bins) so initial predictions start there."""
        centre = self._fwd(torch.tensor(float(value)))
        logits = -(self.bins - centre).square() / (2 * (4 * self.bin_width) ** 2)
        self.net.out.bias.copy_(logits.expand_as(self.net.out.bias))

    def forward(self, state_emb: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self._run(state_emb, action)

    def to_value(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., bins] -> raw-scale value [...]."""
        _check_last_dim(logits, self.num_bins, "TwoHotCritic logits")
        return self._inv((torch.softmax(logits, -1) * self.bins).sum(-1))

    def labels(self, target: torch.Tensor) -> torch.Tensor:
        """Raw-scale target [*] -> soft labels [*, bins] (two-hot or HL-Gauss, per `label_type`)."""
        y = self._fwd(target.to(self.bins.dtype)).unsqueeze(-1)
        if self.label_type == "hl_gauss":
            return self._hl_gauss(y)
        n, bins = self.num_bins, self.bins
        below = ((bins <= y).sum(-1, keepdim=True) - 1).clamp(0, n - 1)
        above = (n - (bins > y).sum(-1, keepdim=True)).clamp(0, n - 1)
        d_below, d_above = (bins[below] - y).abs(), (bins[above] - y).abs()
        same = below == above
        total = torch.where(same, torch.ones_like(d_below), d_below + d_above)
        w_below = torch.where(same, torch.ones_like(d_below), d_above / total)
        w_above = torch.where(same, torch.zeros_like(d_above), d_below / total)
        out = torch.zeros(*y.shape[:-1], n, dtype=bins.dtype, device=bins.device)
        return out.scatter_add_(-1, below, w_below).scatter_add_(-1, above, w_above)

    def _hl_gauss(self, y: torch.Tensor) -> torch.Tensor:
        w = self.bin_width
        edges = torch.cat([self.bins[:1] - w / 2, self.bins + w / 2])
        cdf = torch.special.ndtr((edges - y) / (self.sigma * w))
        probs = cdf[..., 1:] - cdf[..., :-1]
        return probs / probs.sum(-1, keepdim=True).clamp(min=1e-8)


class PopArt(nn.Module):
    """Per-gamma return normalisation with output-preserving rescaling (van Hasselt et al. 2016)."""

    moment_reducer = None

    def __init__(self, num_gammas: int, beta: float = 5e-4, init_nu: float = 100.0, min_sigma: float = 1e-4,
                 min_sigma_ratio: float = 0.1):
        super().__init__()
        if num_gammas < 1:
            raise ValueError(f"num_gammas must be >= 1, got {num_gammas}")
        if not 0 < min_sigma < 1e6:
            raise ValueError(f"PopArt min_sigma must be in (0, 1e6), got {min_sigma}")
        if not 0 <= min_sigma_ratio <= 1:
            raise ValueError(f"PopArt min_sigma_ratio must be in [0, 1], got {min_sigma_ratio}")
        self.num_gammas, self.beta, self.min_sigma = num_gammas, beta, float(min_sigma)
        self.min_sigma_ratio = float(min_sigma_ratio)
        self.register_buffer("mu", torch.zeros(num_gammas))
        self.register_buffer("nu", torch.full((num_gammas,), float(init_nu)))
        self.register_buffer("w", torch.ones(num_gammas))
        self.register_buffer("b", torch.zeros(num_gammas))
        self.register_buffer("_t", torch.ones(num_gammas))

    def _sigma(self, mu, nu):
        sigma = torch.sqrt((nu - mu.square()).clamp(1e-4, 1e8)).clamp(self.min_sigma, 1e6)
        if self.min_sigma_ratio > 0:  # no gamma's sigma below this share of the largest one
            sigma = torch.maximum(sigma, self.min_sigma_ratio * sigma.amax())
        return sigma

    @property
    def sigma(self) -> torch.Tensor:
        return self._sigma(self.mu, self.nu)

    def _check(self, x: torch.Tensor, what: str):
        _check_last_dim(x, self.num_gammas, f"PopArt {what} (gamma axis last)")

    def forward(self, x: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """x [..., G]: normalized -> w x + b; else the raw scale sigma (w x + b) + mu."""
        self._check(x, "input")
        y = self.w * x + self.b
        return y if normalized else self.denormalize(y)

    def normalize_values(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v, "values")
        return (v - self.mu) / self.sigma

    def denormalize(self, v: torch.Tensor) -> torch.Tensor:
        self._check(v, "values")
        return v * self.sigma + self.mu

    @torch.no_grad()
    def update_stats(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """EMA of the per-gamma masked mean / mean-square of raw `values [..., G]` (empty gammas keep their stats)."""
        self._check(values, "values")
        v = values.detach().to(self.mu.dtype)
        if mask is not None and mask.ndim < v.ndim and tuple(mask.shape) == tuple(v.shape[:mask.ndim]):
            mask = mask.reshape(*mask.shape, *([1] * (v.ndim - mask.ndim)))  # leading-aligned, e.g. [B, T]
        try:
            m = torch.ones_like(v) if mask is None else torch.broadcast_to(mask, v.shape).to(v.dtype)
        except RuntimeError as e:
            raise ValueError(f"PopArt mask of shape {tuple(mask.shape)} does not broadcast to values of shape "
                             f"{tuple(v.shape)}") from e
        v = torch.where(m > 0, v, torch.zeros((), dtype=v.dtype, device=v.device))
        dims = tuple(range(v.ndim - 1))
        count, total, sq_total = m.sum(dims), (v * m).sum(dims), (v.square() * m).sum(dims)
        if self.moment_reducer is not None:  # data-parallel: the moments of the global batch
            count, total, sq_total = self.moment_reducer(torch.stack([count, total, sq_total])).unbind(0)
        mean, sq_mean, t, beta_t = debiased_ema_step(count, total, sq_total, self._t, self.beta)
        mu_old, sigma_old = self.mu.clone(), self.sigma
        mu_new = (1.0 - beta_t) * mu_old + beta_t * mean
        nu_new = (1.0 - beta_t) * self.nu + beta_t * sq_mean
        sigma_new = self._sigma(mu_new, nu_new)
        self.w.mul_(sigma_old / sigma_new)
        self.b.copy_((sigma_old * self.b + mu_old - mu_new) / sigma_new)
        self.mu.copy_(mu_new)
        self.nu.copy_(nu_new)
        self._t.copy_(t)

    def extra_repr(self) -> str:
        return f"num_gammas={self.num_gammas}, beta={self.beta}, min_sigma={self.min_sigma}"
