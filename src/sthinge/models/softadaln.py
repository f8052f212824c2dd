"""SoftNorm, SoftAdaLN, the gated residual and the condition network of HINGE (paper §3.3, Eqs. 3–5).

Shapes: tokens h (B, L, D); condition embedding c (B, D) shared by all layers.

* SoftNorm (Eq. 3): SoftNorm(h) = (1 − η) h + η LN₀(h), LN₀ = LayerNorm without affine, eps 1e-6.
* SoftAdaLN (Eq. 4): SoftNorm(h) ⊙ (1 + s(c)) + κ(c) with [κ, s] = Linear(SiLU(c)) (the official code's
  Linear-on-SiLU, as in DiT's adaLN).
* Gated residual (Eq. 5): h_out = LN_post(τ(c) ⊙ u + α h_in), u = frozen sub-layer(SoftAdaLN(h_in)).
* Condition network (official default): c = MLP_time(e_t) + MLP_img(v) + MLP_mask(m_{t−1}), each MLP
  Linear → SiLU → Linear, e_t the 256-d sinusoidal embedding of the raw integer step t (see Method,
  :ref:`method-condition`);
  the paper's c = φ_cond([v; e_t]) is :class:`ConcatCondition`.
* Hidden-unit modulation (sthinge's ``modulation="hidden"``, not in the paper): a frozen sub-layer's hidden
  units a are scaled per unit, a ⊙ (1 + s(c)) with s = Linear(SiLU(c)) started at 0 (:class:`HiddenModulation`).
  A shift κ(c) before a sub-layer moves every token the same way; a scale of hidden units acts on each token
  through that token's own activations, so the condition reaches each gene differently.

Parametrisations (chosen once, at construction, by the ``init`` name):

``"official"``
    τ = σ(g), η = σ(b); projection weights 0, gate bias 6 (τ = σ(6) ≈ 0.9975), SoftNorm bias −12
    (η ≈ 6.1e-6). Loads official checkpoints as they are.
``"exact-identity"``
    τ = 2σ(g), η = b; weights and biases 0, so τ = 1 and η = 0 *exactly* at the start while both stay
    trainable (dτ/dg = 0.5, dη/db = 1 there). τ then lies in (0, 2) instead of (0, 1); η is unconstrained, as
    the paper's Eq. 3 writes it.
``"random"``
    the ablation NoIdInit: parametrisation of ``"official"``, projection weights Xavier-uniform, all biases 0
    (τ = 0.5 and η = 0.5 on average at the start).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "INITS",
    "AdaLNModulation",
    "HiddenModulation",
    "ConcatCondition",
    "ModulationInit",
    "SoftAdaLN",
    "SoftNorm",
    "SumCondition",
    "gated_residual",
    "modulate",
    "timestep_embedding",
]

SOFTNORM_EPS = 1e-6


def _double_sigmoid(x: Tensor) -> Tensor:
    return 2 * torch.sigmoid(x)


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class ModulationInit:
    """How gates τ and SoftNorm weights η are parametrised and initialised.

    Parameters
    ----------
    gate_fn
        τ as a function of the gate pre-activation.
    eta_fn
        η as a function of the SoftNorm parameter.
    gate_bias
        Initial bias of the gate chunks.
    eta_bias
        Initial SoftNorm parameter.
    zero_weights
        Zero (identity) or Xavier-uniform projection weights.
    """

    gate_fn: Callable[[Tensor], Tensor]
    eta_fn: Callable[[Tensor], Tensor]
    gate_bias: float
    eta_bias: float
    zero_weights: bool


INITS: dict[str, ModulationInit] = {
    "official": ModulationInit(torch.sigmoid, torch.sigmoid, gate_bias=6.0, eta_bias=-12.0, zero_weights=True),
    "exact-identity": ModulationInit(_double_sigmoid, _identity, gate_bias=0.0, eta_bias=0.0, zero_weights=True),
    "random": ModulationInit(torch.sigmoid, torch.sigmoid, gate_bias=0.0, eta_bias=0.0, zero_weights=False),
}
"""Named parametrisations; see the module docstring."""


def _get_init(init: str) -> ModulationInit:
    if init not in INITS:
        raise ValueError(f"init must be one of {sorted(INITS)}, got {init!r}")
    return INITS[init]


class SoftNorm(nn.Module):
    """SoftNorm (Eq. 3): (1 − η) h + η LN₀(h) with one learnable scalar; parameter name ``_lambda_bias``.

    Parameters
    ----------
    init
        Parametrisation name, see :data:`INITS`.
    """

    def __init__(self, init: str = "official") -> None:
        super().__init__()
        self._init = _get_init(init)
        self.eta_fn = self._init.eta_fn
        self._lambda_bias = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Set the parameter to its initial value."""
        self._lambda_bias.fill_(self._init.eta_bias)

    @property
    def eta(self) -> Tensor:
        """Current mixing weight η."""
        return self.eta_fn(self._lambda_bias)

    def forward(self, h: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        eta = self.eta_fn(self._lambda_bias)
        return torch.lerp(h, F.layer_norm(h, h.shape[-1:], eps=SOFTNORM_EPS), eta.to(h.dtype))


def modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """κ + (1 + s) ⊙ h, with shift/scale (B, 1, D) broadcast over tokens."""
    return torch.addcmul(shift, h, 1 + scale)


def gated_residual(u: Tensor, h_in: Tensor, gate: Tensor, alpha: float, post_norm: nn.Module) -> Tensor:
    """Eq. 5: LN_post(τ ⊙ u + α h_in)."""
    return post_norm(torch.add(gate * u, h_in, alpha=alpha))


def _init_projection(proj: nn.Linear, n_chunks: int, gate_chunks: tuple[int, ...], init: ModulationInit) -> None:
    with torch.no_grad():
        if init.zero_weights:
            nn.init.zeros_(proj.weight)
        else:
            nn.init.xavier_uniform_(proj.weight)
        nn.init.zeros_(proj.bias)
        D = proj.out_features // n_chunks
        for k in gate_chunks:
            proj.bias[k * D : (k + 1) * D] = init.gate_bias


class AdaLNModulation(nn.Module):
    """Per-layer projection ``proj``: SiLU(c) (B, D) -> ``n_chunks`` vectors (B, 1, D) each.

    Parameters
    ----------
    d_model
        Width D.
    n_chunks
        Number of D-sized chunks (6 in a HINGE block: shift, scale, gate of the attention, then of the FFN).
    gate_chunks
        Indices of the gate chunks (their bias starts at the init's ``gate_bias``).
    init
        Parametrisation name, see :data:`INITS`.
    """

    def __init__(self, d_model: int, n_chunks: int, gate_chunks: tuple[int, ...] = (), init: str = "official") -> None:
        super().__init__()
        self._init = _get_init(init)
        self.gate_fn = self._init.gate_fn
        self.n_chunks = n_chunks
        self.gate_chunks = gate_chunks
        self.proj = nn.Linear(d_model, n_chunks * d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity (zero weights, gate bias) or Xavier-uniform init; see :data:`INITS`."""
        _init_projection(self.proj, self.n_chunks, self.gate_chunks, self._init)

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:
        """(B, D) -> n_chunks tensors (B, 1, D)."""
        return self.proj(F.silu(c)).unsqueeze(1).chunk(self.n_chunks, dim=-1)


class HiddenModulation(nn.Module):
    """Condition-dependent scale of a frozen sub-layer's hidden units: a ⊙ (1 + s(c)), with s(c) = proj(SiLU(c)).

    ``proj`` (D → H) starts at zero weights and bias, so the sub-layer is unchanged at the start, whatever the
    condition (for every parametrisation: the modulated units are not part of the paper's design).

    Parameters
    ----------
    d_model
        Width D of the condition embedding c.
    d_hidden
        Number H of hidden units scaled.
    """

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero weights and bias (the identity)."""
        with torch.no_grad():
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, a: Tensor, c: Tensor) -> Tensor:
        """Hidden units (B, L, H), condition (B, D) -> a ⊙ (1 + s(c)) (B, L, H)."""
        return a * (1 + self.proj(F.silu(c)).unsqueeze(1))


class SoftAdaLN(nn.Module):
    """Ungated SoftAdaLN (Eq. 4): SoftNorm(h) ⊙ (1 + s(c)) + κ(c); parameters ``pre_norm``, ``proj``.

    ``proj`` maps SiLU(c) to [κ, s] (official chunk order shift, scale).

    Parameters
    ----------
    d_model
        Width D.
    init
        Parametrisation name, see :data:`INITS`.
    softnorm
        False for the NoSoftNorm ablation (``pre_norm`` is the identity and has no parameter).
    """

    def __init__(self, d_model: int, init: str = "official", softnorm: bool = True) -> None:
        super().__init__()
        self._init = _get_init(init)
        self.pre_norm = SoftNorm(init) if softnorm else nn.Identity()
        self.proj = nn.Linear(d_model, 2 * d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity (zero) or Xavier-uniform init of ``proj``; see :data:`INITS`."""
        _init_projection(self.proj, 2, (), self._init)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        """Tokens (B, L, D), condition (B, D) -> (B, L, D)."""
        shift, scale = self.proj(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each
        return modulate(self.pre_norm(h), shift, scale)


def timestep_embedding(t: Tensor, dim: int = 256, dtype: torch.dtype | None = None) -> Tensor:
    """Sinusoidal embedding [cos(t f_i), sin(t f_i)], f_i = exp(−ln(10⁴) i / (dim/2)), of the raw integer t.

    Parameters
    ----------
    t
        (B,) diffusion steps (integers 1..T).
    dim
        Embedding size (even).
    dtype
        Computation dtype (default float32).

    Returns
    -------
    (B, dim)
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    dtype = dtype or torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype, device=t.device) / half)  # (half,)
    args = t.to(dtype).unsqueeze(-1) * freqs  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _mlp(d_in: int, d_model: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_model), nn.SiLU(), nn.Linear(d_model, d_model))


def _xavier_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class SumCondition(nn.Module):
    """Official condition network: c = MLP_time(e_t) + MLP_img(v) + MLP_mask(m_{t−1}).

    Submodules ``time`` (256 → D), ``label`` (C → D) and ``mask`` (G → D), each Linear → SiLU → Linear with biases,
    Xavier-uniform weights and zero biases (the official global init pass).

    Parameters
    ----------
    cond_dim
        Image feature size C.
    n_genes
        Number of genes G.
    d_model
        Width D.
    time_dim
        Size of the sinusoidal time embedding.
    """

    def __init__(self, cond_dim: int, n_genes: int, d_model: int, time_dim: int = 256) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time = _mlp(time_dim, d_model)
        self.label = _mlp(cond_dim, d_model)
        self.mask = _mlp(n_genes, d_model)
        _xavier_(self)

    def forward(self, t: Tensor, cond: Tensor, next_visible: Tensor) -> Tensor:
        """Steps (B,), image features (B, C), m_{t−1} (B, G) -> c (B, D)."""
        dtype = self.label[0].weight.dtype
        e_t = timestep_embedding(t, self.time_dim, dtype)
        return self.time(e_t) + self.label(cond.to(dtype)) + self.mask(next_visible.to(dtype))


class ConcatCondition(nn.Module):
    """The paper's condition network c = φ_cond([v; e_t]) (no mask pathway); submodule ``joint``.

    Parameters
    ----------
    cond_dim
        Image feature size C.
    d_model
        Width D.
    time_dim
        Size of the sinusoidal time embedding.
    """

    def __init__(self, cond_dim: int, d_model: int, time_dim: int = 256) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.joint = _mlp(cond_dim + time_dim, d_model)
        _xavier_(self)

    def forward(self, t: Tensor, cond: Tensor, next_visible: Tensor) -> Tensor:
        """Steps (B,), image features (B, C), m_{t−1} (B, G, unused) -> c (B, D)."""
        dtype = self.joint[0].weight.dtype
        e_t = timestep_embedding(t, self.time_dim, dtype)
        return self.joint(torch.cat([cond.to(dtype), e_t], dim=-1))
