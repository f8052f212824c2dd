"""HINGE: a frozen CellFM retrofitted with SoftAdaLN, as a masked-diffusion denoiser over G genes.

:class:`Hinge` computes exactly the official model's forward (see Method, :ref:`method-softadaln`): the value encoder on
every entry (masked ones carry the fill value), CellFM's ``zero_emb`` *added* on masked entries, the gene
embedding added, CLS prepended, ν = 1/√G, masked genes removed as keys/values in the first half of the layers
only; per block SoftNorm → modulate → frozen sub-layer → gate → α-residual → frozen post-LN; then an ungated
SoftAdaLN and CellFM's value decoder. Its ``state_dict`` uses the official names (``retentionblocks.{i}...``,
``final_layer...``, ``cond_embed...``, ``gg``), so official checkpoints load directly
(:func:`load_official_hinge`) and, for G = 200 and C = 1536 on the 40-layer backbone, the parameter counts are
the official 1,382,298,450 total / 581,468,241 trainable.

Default initialisation
----------------------
``init="official"`` (gate bias 6 → τ = σ(6) ≈ 0.9975, SoftNorm η = σ(−12) ≈ 6e-6) is the default, because the
official code is the tested path (see Method, :ref:`method-paper-vs-code`) and official checkpoints need its
parametrisation.
Its start is only close to CellFM: on random weights (D = 96, 40 layers, G = 50, fp32) the output differs from
the frozen backbone's by 1.2e-4 relative L2 with CellFM's initialisation and 2.7e-3 with unit-gain Xavier
projections (``tests/models/test_hinge.py::test_official_init_is_only_close_to_the_backbone``); the frozen
post-LNs largely absorb the gates' 0.25 % shortfall. ``init="exact-identity"`` uses τ = 2σ(g) and η = b
with all new parameters zero, so at the start the model *is* the frozen backbone (to float rounding) for any
condition and any t, and both stay trainable; see :mod:`sthinge.models.softadaln`.

Dropout
-------
``dropout=0.1`` (default) reproduces the official per-block dropout p_i = 0.1·i/N on the sub-layer outputs
(active in train mode only); set 0 to switch it off.

Variants (paper §4.3, chosen at construction; ``forward`` is the same program for all)
----------------------------------------------------------------------------------------
``"hinge"``           frozen backbone, trainable SoftAdaLN and condition network.
``"scratch"``         the same architecture, backbone re-initialised (CellFM init) and trained.
``"finetune"``        the same architecture, the pre-trained backbone kept (not re-initialised) and trained with the
                      rest: full fine-tuning, in neither the paper nor the official code (a measure of what freezing
                      costs).
``"decoder-tune"``    also trains CellFM's value decoder (``final_layer.w1``, ``final_layer.w2``).
``"backbone-lora"``   also LoRA adapters (rank ``lora_rank``, scale ``lora_alpha / lora_rank``, B = 0 at start)
                      on every attention (q, k, v, u, o) and FFN (u, v, o) projection.
``"hist-affine-ln"``  no pre-sub-layer SoftAdaLN and no gate; each frozen post-LN's scale and shift become
                      γ ⊙ (1 + s(c)) and β + b(c), [s, b] from a zero-initialised Linear on SiLU(c) per layer
                      (our reading of "histology-conditioned affine replaces the post-LN scale/shift").
``"nosoftnorm"``      SoftAdaLN without SoftNorm (no η parameters), also before the decoder.
``"noidinit"``        full structure, but no identity init (Xavier-uniform projections, zero biases, η = σ(0)).

Likelihood
----------
``likelihood="point"`` (default) is the paper's and the official model: the decoder gives x̂₀ and the sampler writes
it into every revealed gene, so samples are conditional means, not draws. ``likelihood="gaussian"`` adds a small
head (:class:`~sthinge.models.likelihood.StdHead`, state-dict prefix ``std_head.``) on the same features the value
decoder reads, giving a per-gene σ; the mean is the unchanged value decoder (so identity-at-init, parameter counts
of the mean path and official parity are untouched), ``forward(..., return_std=True)`` returns (μ, σ), training
scores the predictive with ``likelihood_loss`` and the sampler draws ``max(0, μ + σ ε)`` (see
:mod:`sthinge.models.likelihood`).

Hinge takes ownership of the backbone's modules: their ``requires_grad`` flags are set in place, ``scratch``
re-initialises them, ``backbone-lora`` wraps their projections. The backbone's mask token ``mask_emb`` and
cell-wise decoder are not used (as in the official code) and are not part of the model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sthinge._state_dict import compare_state_dict, listing
from sthinge.models.cellfm import NUMERICS, CellFM, CellFMConfig, RetentionLayer, SoftBinning, ValueDecoder
from sthinge.models.likelihood import StdHead
from sthinge.models.softadaln import (
    AdaLNModulation,
    ConcatCondition,
    HiddenModulation,
    SoftAdaLN,
    SoftNorm,
    SumCondition,
    gated_residual,
    modulate,
)

__all__ = ["VARIANTS", "FinalLayer", "Hinge", "HingeBlock", "HingeConfig", "LoRALinear", "load_official_hinge"]

VARIANTS = (
    "hinge",
    "scratch",
    "finetune",
    "decoder-tune",
    "backbone-lora",
    "hist-affine-ln",
    "nosoftnorm",
    "noidinit",
)
_CHOICES = {
    "condition": ("sum", "concat"),
    "mask_fill": ("gauss", "zero"),
    "init": ("official", "exact-identity"),
    "variant": VARIANTS,
    "schedule": ("poly_auto", "poly", "linear", "cosine"),
    "masking": ("exact", "bernoulli"),
    "likelihood": ("point", "gaussian"),
    "likelihood_loss": ("crps", "beta_nll"),
    "objective": ("mask-diff", "gauss-diff"),
    "modulation": ("paper", "hidden"),
}


@dataclass(frozen=True)
class HingeConfig:
    """Configuration of a :class:`Hinge` model.

    Parameters
    ----------
    n_genes
        Number of genes G of the panel.
    cond_dim
        Size C of the histology features (1536 = UNI 1024 ‖ CONCH 512).
    n_steps
        Diffusion steps T.
    condition
        ``"sum"`` (official: time + image + mask(m_{t−1}) MLPs) or ``"concat"`` (paper: φ_cond([v; e_t])).
    mask_fill
        Value of masked entries: ``"gauss"`` (N(0, 1), official default = paper's RandMask) or ``"zero"``.
    init
        ``"official"`` (default) or ``"exact-identity"``; see the module docstring.
    variant
        One of :data:`VARIANTS`.
    lora_rank, lora_alpha
        LoRA rank and scale numerator (``backbone-lora`` only).
    dropout
        Dropout scale: block i drops sub-layer outputs with p = dropout·i/N (official 0.1).
    time_dim
        Size of the sinusoidal time embedding.
    schedule, zeta, k_tail, masking
        The masking schedule the model is trained and sampled with; see
        :class:`sthinge.models.diffusion.MaskSchedule` (``schedule="cosine"`` is the "Cosine" row of the paper's
        Table S4, ᾱ_t = cos(π/2 · t/T) in sthinge's reading).
    likelihood
        ``"point"`` (default; the paper's and official model: the decoder predicts x̂₀, the loss is the squared error
        and the sampler writes x̂₀ into revealed genes) or ``"gaussian"`` (an extra head predicts a per-gene σ; the
        loss is ``likelihood_loss`` and the sampler draws each revealed gene from max(0, N(μ, σ²))). See
        :mod:`sthinge.models.likelihood`.
    likelihood_loss
        Scoring rule of ``likelihood="gaussian"``: ``"crps"`` (default; closed-form CRPS of the Gaussian censored at
        0, the distribution the sampler draws from) or ``"beta_nll"`` (β-NLL, β = 0.5, Seitzer et al. 2022). Not
        used by ``"point"``. Chosen by ``benchmarks/bench_likelihood.py``.
    objective
        ``"mask-diff"`` (default; HINGE's masked diffusion over genes) or ``"gauss-diff"`` (the paper's Gauss-Diff
        ablation, Table 3: DDPM Gaussian diffusion over all genes with x̂₀-prediction on the same architecture, the
        cosine noise schedule of Nichol & Dhariwal over ``n_steps``; see :mod:`sthinge.models.gaussian_diffusion`).
        ``"gauss-diff"`` needs ``likelihood="point"``; the masking fields (``schedule``, ``zeta``, ``k_tail``,
        ``masking``, ``mask_fill``) do not apply to it.
    modulation
        What the condition modulates. ``"paper"`` (default; the paper's and the official design): SoftAdaLN before
        each frozen sub-layer and before the decoder. ``"hidden"`` (sthinge's, not in the paper): in addition, the
        hidden units of each frozen feed-forward sub-layer and of the value decoder are scaled per unit by
        (1 + s(c)) (:class:`~sthinge.models.softadaln.HiddenModulation`, zero at the start, so identity at
        initialisation is kept); it gives the condition a gene-specific path through the frozen layers. Chosen by
        the oracle diagnostic (``benchmarks/bench_steer.py``, ``docs/benchmarks.md``). Not with the
        ``"hist-affine-ln"`` variant.
    """

    n_genes: int
    cond_dim: int = 1536
    n_steps: int = 50
    condition: str = "sum"
    mask_fill: str = "gauss"
    init: str = "official"
    variant: str = "hinge"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    dropout: float = 0.1
    time_dim: int = 256
    schedule: str = "poly_auto"
    zeta: float | None = None
    k_tail: int = 1
    masking: str = "exact"
    likelihood: str = "point"
    likelihood_loss: str = "crps"
    objective: str = "mask-diff"
    modulation: str = "paper"

    def __post_init__(self) -> None:
        for field, allowed in _CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.n_genes < 1 or self.cond_dim < 1 or self.n_steps < 1:
            raise ValueError("n_genes, cond_dim and n_steps must be positive")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.modulation == "hidden" and self.variant == "hist-affine-ln":
            raise ValueError("modulation='hidden' is not defined for the variant 'hist-affine-ln'")
        if self.objective == "gauss-diff" and self.likelihood != "point":
            raise ValueError(
                f"objective='gauss-diff' needs likelihood='point' (its decoder predicts x̂₀), got "
                f"likelihood={self.likelihood!r}"
            )

    @property
    def modulation_init(self) -> str:
        """Parametrisation name of the modulators (``"random"`` for the NoIdInit ablation)."""
        return "random" if self.variant == "noidinit" else self.init


def check_gene_ids(gene_ids, n_genes: int, low: int, high: int, note: str = "") -> Tensor:
    """``gene_ids`` as a tensor, checked: shape (n_genes,), integer, every id in ``low..high`` (not checked on the
    meta device, where values are unknown)."""
    gene_ids = torch.as_tensor(gene_ids)
    if gene_ids.dim() != 1 or gene_ids.numel() != n_genes:
        raise ValueError(f"gene_ids must have shape ({n_genes},), got {tuple(gene_ids.shape)}")
    if gene_ids.is_floating_point():
        raise TypeError("gene_ids must be an integer tensor")
    if gene_ids.device.type != "meta" and (int(gene_ids.min()) < low or int(gene_ids.max()) > high):
        raise ValueError(f"gene_ids must lie in {low}..{high}{note}")
    return gene_ids


class LoRALinear(nn.Module):
    """A frozen bias-free Linear plus a low-rank update: y = W x + (α/r) B A x.

    Holds the wrapped layer's ``weight`` Parameter itself (same object) and the adapters ``A`` (r × in) and
    ``B`` (out × r, zero at the start, so the layer is unchanged until trained).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.weight = base.weight
        self.A = nn.Linear(base.in_features, rank, bias=False)
        self.B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.B.weight)
        self.scaling = alpha / rank

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out)."""
        return F.linear(x, self.weight) + self.B(self.A(x)) * self.scaling


def _add_lora(layer: RetentionLayer, rank: int, alpha: float) -> None:
    for module, names in ((layer.attn, "qkvuo"), (layer.ffn, "uvo")):
        for n in names:
            setattr(module, f"{n}_proj", LoRALinear(getattr(module, f"{n}_proj"), rank, alpha))


class HingeBlock(nn.Module):
    """A CellFM layer with SoftAdaLN before each frozen sub-layer and the gated α-residual (Eqs. 3–5).

    Parameters: ``pre_norm1``/``pre_norm2`` (SoftNorm), ``adaln.proj`` (D → 6D: shift, scale, gate of the
    attention, then of the FFN), with ``hidden=True`` also ``ffn_hidden.proj`` (D → D: the scale of the
    feed-forward's D hidden units, W_o((W_u x ⊙ W_v x) ⊙ (1 + s(c)))); ``attn``, ``ffn``, ``post_norm1``,
    ``post_norm2`` are the backbone's modules.
    """

    def __init__(
        self,
        layer: RetentionLayer,
        alpha: float,
        dropout: float,
        init: str,
        softnorm: bool = True,
        hidden: bool = False,
    ) -> None:
        super().__init__()
        self.attn = layer.attn
        self.ffn = layer.ffn
        self.post_norm1 = layer.post_norm1
        self.post_norm2 = layer.post_norm2
        self.pre_norm1 = SoftNorm(init) if softnorm else nn.Identity()
        self.pre_norm2 = SoftNorm(init) if softnorm else nn.Identity()
        D = layer.post_norm1.normalized_shape[0]
        self.adaln = AdaLNModulation(D, 6, (2, 5), init)
        self.ffn_hidden = HiddenModulation(D, D) if hidden else None
        self.dropout = nn.Dropout(dropout)
        self.alpha = alpha

    def _ffn(self, x: Tensor, c: Tensor) -> Tensor:
        if self.ffn_hidden is None:
            return self.ffn(x)
        f = self.ffn
        return f.o_proj(self.ffn_hidden(f.u_proj(x) * f.v_proj(x), c))

    def forward(self, x: Tensor, c: Tensor, key_mask: Tensor | float, len_scale: float) -> Tensor:
        """Tokens (B, L, D), condition (B, D), κ (B, L, 1) or 1 -> (B, L, D)."""
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.adaln(c)  # (B, 1, D) each
        tau_a, tau_f = self.adaln.gate_fn(gate_a), self.adaln.gate_fn(gate_f)
        u = self.attn(modulate(self.pre_norm1(x), shift_a, scale_a), key_mask, len_scale)
        x = gated_residual(self.dropout(u), x, tau_a, self.alpha, self.post_norm1)
        u = self._ffn(modulate(self.pre_norm2(x), shift_f, scale_f), c)
        return gated_residual(self.dropout(u), x, tau_f, self.alpha, self.post_norm2)


class HistAffineLNBlock(nn.Module):
    """Hist-Affine-LN ablation: frozen sub-layers, ungated α-residual, condition-modulated post-LN affine.

    y = LN₀(α x + u) ⊙ γ ⊙ (1 + s(c)) + β + b(c), with [s₁, b₁, s₂, b₂] = ``adaln.proj``(SiLU(c)) (zero at start).
    """

    def __init__(self, layer: RetentionLayer, alpha: float, dropout: float, init: str) -> None:
        super().__init__()
        self.attn = layer.attn
        self.ffn = layer.ffn
        self.post_norm1 = layer.post_norm1
        self.post_norm2 = layer.post_norm2
        self.adaln = AdaLNModulation(layer.post_norm1.normalized_shape[0], 4, (), init)
        self.dropout = nn.Dropout(dropout)
        self.alpha = alpha

    @staticmethod
    def _affine_ln(h: Tensor, ln: nn.LayerNorm, scale: Tensor, shift: Tensor) -> Tensor:
        return F.layer_norm(h, ln.normalized_shape, eps=ln.eps) * (ln.weight * (1 + scale)) + (ln.bias + shift)

    def forward(self, x: Tensor, c: Tensor, key_mask: Tensor | float, len_scale: float) -> Tensor:
        """Tokens (B, L, D), condition (B, D), κ (B, L, 1) or 1 -> (B, L, D)."""
        scale1, shift1, scale2, shift2 = self.adaln(c)  # (B, 1, D) each
        u = self.dropout(self.attn(x, key_mask, len_scale))
        x = self._affine_ln(self.alpha * x + u, self.post_norm1, scale1, shift1)
        u = self.dropout(self.ffn(x))
        return self._affine_ln(self.alpha * x + u, self.post_norm2, scale2, shift2)


class FinalLayer(SoftAdaLN):
    """Ungated SoftAdaLN (``pre_norm``, ``proj``) followed by CellFM's value decoder (``w1``, ``w2``).

    ``forward(h, c) == decode(features(h, c), c)``; :class:`~sthinge.models.likelihood.StdHead` reads ``features``.
    With ``hidden=True`` the decoder's D hidden units are scaled by (1 + s(c)) (``hidden.proj``, zero at start):
    x̂₀ = w₂ (LeakyReLU(W₁ x) ⊙ (1 + s(c))).
    """

    def __init__(
        self, value_dec: ValueDecoder, d_model: int, init: str, softnorm: bool = True, hidden: bool = False
    ) -> None:
        super().__init__(d_model, init, softnorm)
        self.w1 = value_dec.w1
        self.w2 = value_dec.w2
        self.slope = value_dec.slope
        self.hidden = HiddenModulation(d_model, d_model) if hidden else None

    def features(self, h: Tensor, c: Tensor) -> Tensor:
        """Gene tokens (B, G, D), condition (B, D) -> the decoder's input SoftAdaLN(h, c) (B, G, D)."""
        return super().forward(h, c)

    def decode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """The value decoder: features (B, G, D) (and the condition (B, D) with ``hidden``) -> x̂₀ (B, G)."""
        a = F.leaky_relu(self.w1(x), self.slope)
        if self.hidden is not None:
            if c is None:
                raise ValueError("this decoder modulates its hidden units: pass the condition c")
            a = self.hidden(a, c)
        return self.w2(a).squeeze(-1)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        """Gene tokens (B, G, D), condition (B, D) -> x̂₀ (B, G)."""
        return self.decode(self.features(h, c), c)


class _ValueTokens(nn.Module):
    """Holds CellFM's soft-binning encoder under the official name ``value_enc.value_enc``."""

    def __init__(self, value_enc: SoftBinning) -> None:
        super().__init__()
        self.value_enc = value_enc

    def forward(self, x: Tensor) -> Tensor:
        """(B, G) -> (B, G, D)."""
        return self.value_enc(x)


class Hinge(nn.Module):
    """HINGE denoiser f_θ(x_t, t, v) -> x̂₀ over a fixed gene panel.

    Parameters
    ----------
    backbone
        A (pre-trained) :class:`~sthinge.models.cellfm.CellFM`; its modules are reused, not copied.
    gene_ids
        (G,) CellFM gene ids (1-based vocabulary rows) of the panel, in the model's gene order.
    config
        See :class:`HingeConfig`; ``config.n_genes`` must equal G.

    Examples
    --------
    >>> backbone = CellFM.from_preset("tiny")
    >>> model = Hinge(backbone, torch.arange(1, 21), HingeConfig(n_genes=20, cond_dim=8))
    >>> B = 2
    >>> x0_hat = model(torch.randn(B, 20), torch.full((B,), 50), torch.zeros(B, 20), torch.zeros(B, 20),
    ...                torch.randn(B, 8))
    >>> x0_hat.shape
    torch.Size([2, 20])
    """

    def __init__(self, backbone: CellFM, gene_ids: Tensor, config: HingeConfig) -> None:
        super().__init__()
        bc = backbone.config
        gene_ids = check_gene_ids(gene_ids, config.n_genes, 1, bc.vocab_size, " (0 is padding)")
        if bc.n_prefix != 1:
            raise ValueError("HINGE uses only the CLS token: build the backbone with st_tokens=False")
        self.config = config
        self.backbone_config = bc
        D, N = bc.d_model, bc.n_layers
        backbone_params = {id(p) for p in backbone.parameters()}
        if config.variant == "scratch":
            backbone.reset_parameters()

        self.gene_emb = backbone.gene_emb
        self.cls_token = backbone.cls_token
        self.zero_emb = backbone.zero_emb
        self.register_buffer("gg", gene_ids.long().clone())
        self.value_enc = _ValueTokens(backbone.value_enc.value_enc)
        if config.condition == "sum":
            self.cond_embed = SumCondition(config.cond_dim, config.n_genes, D, config.time_dim)
        else:
            self.cond_embed = ConcatCondition(config.cond_dim, D, config.time_dim)
        if config.variant == "backbone-lora":
            for layer in backbone.encoder:
                _add_lora(layer, config.lora_rank, config.lora_alpha)
        init, softnorm = config.modulation_init, config.variant != "nosoftnorm"
        hidden = config.modulation == "hidden"
        blocks = []
        for i, layer in enumerate(backbone.encoder):
            p = config.dropout * i / N
            if config.variant == "hist-affine-ln":
                blocks.append(HistAffineLNBlock(layer, bc.alpha, p, init))
            else:
                blocks.append(HingeBlock(layer, bc.alpha, p, init, softnorm, hidden))
        self.retentionblocks = nn.ModuleList(blocks)
        self.final_layer = FinalLayer(backbone.value_dec, D, init, softnorm, hidden)
        # only for likelihood="gaussian" (created last: the point model's parameters, names and init are unchanged)
        self.std_head = StdHead(D) if config.likelihood == "gaussian" else None
        self.n_masked_layers = N // 2  # masked genes are hidden as keys/values in blocks 0..N/2-1 only
        self.len_scale = (config.n_genes + 1e-6) ** -0.5  # ν = 1/√G over all genes

        trainable_backbone = {"scratch": "all", "finetune": "all", "decoder-tune": "decoder"}.get(config.variant)
        decoder = {id(self.final_layer.w1.weight), id(self.final_layer.w2.weight)}
        for p in self.parameters():
            frozen = id(p) in backbone_params
            if trainable_backbone == "all" or (trainable_backbone == "decoder" and id(p) in decoder):
                frozen = False
            p.requires_grad_(not frozen)

    @classmethod
    def from_state(cls, backbone: CellFM, state: dict[str, Tensor], config: HingeConfig) -> Hinge:
        """A module to load ``state`` (a ``state_dict`` of this class) into: the panel from its buffer ``gg``."""
        return cls(backbone, state["gg"], config)

    @property
    def n_genes(self) -> int:
        """Number of genes G."""
        return self.config.n_genes

    @property
    def gene_ids(self) -> Tensor:
        """(G,) CellFM gene ids of the panel."""
        return self.gg

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (what the optimiser gets)."""
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, weight_decay: float = 0.0) -> list[dict]:
        """Optimiser groups: matrices with ``weight_decay``, biases and scalars without.

        Parameters
        ----------
        weight_decay
            Decay of the weight matrices (the paper uses 0).

        Returns
        -------
        list of dict
            For ``torch.optim.AdamW(model.param_groups(wd), lr=...)``; empty groups are omitted.
        """
        decay = [p for p in self.trainable_parameters() if p.dim() >= 2]
        no_decay = [p for p in self.trainable_parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def embed_tokens(self, x_t: Tensor, visible: Tensor) -> Tensor:
        """Input tokens: e_val(x_t) + (1 − m_t)·zero_emb + E[gg], CLS prepended: (B, G) -> (B, G+1, D)."""
        B = x_t.shape[0]
        m = visible.to(self.zero_emb.dtype).unsqueeze(-1)  # (B, G, 1)
        tokens = self.value_enc(x_t) + (1 - m) * self.zero_emb + F.embedding(self.gg, self.gene_emb)
        return torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)

    def forward(
        self, x_t: Tensor, t: Tensor, next_visible: Tensor, visible: Tensor, cond: Tensor, *, return_std: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict x̂₀ (the official ``forward(x, t, mp, mt, y)``).

        Parameters
        ----------
        x_t
            (B, G) (or (B, 1, G)): visible entries = values, masked entries = fill value.
        t
            (B,) integer steps in 1..T.
        next_visible
            (B, G) m_{t−1}, visibility after this step's reveal; feeds only the mask MLP of the condition.
        visible
            (B, G) m_t, current visibility; drives ``zero_emb`` and the key/value mask.
        cond
            (B, C) histology features.
        return_std
            Also return the predicted standard deviation σ (``likelihood="gaussian"`` only).

        Returns
        -------
        x0_hat
            (B, G) x̂₀ for every gene (for ``likelihood="gaussian"``: the location μ of the predicted Gaussian,
            before its censoring at 0).
        std
            (B, G) float32 σ > 0, only with ``return_std``.
        """
        if return_std and self.std_head is None:
            raise ValueError("return_std=True needs a model with likelihood='gaussian' (this one is 'point')")
        if x_t.dim() == 3:
            x_t = x_t.squeeze(1)
        c = self.cond_embed(t, cond, next_visible)  # (B, D), once per spot and step
        h = self.embed_tokens(x_t, visible)  # (B, G+1, D)
        m = visible.to(h.dtype)
        key_mask = torch.cat([m.new_ones(m.shape[0], 1), m], dim=1).unsqueeze(-1)  # (B, G+1, 1), CLS always a key
        for i, block in enumerate(self.retentionblocks):
            h = block(h, c, key_mask if i < self.n_masked_layers else 1.0, self.len_scale)
        if not return_std:
            return self.final_layer(h[:, 1:], c)
        x = self.final_layer.features(h[:, 1:], c)
        return self.final_layer.decode(x, c), self.std_head(x)

    def save(self, path: str | os.PathLike, *, var_names: list[str] | None = None, overwrite: bool = False) -> None:
        """Write a sthinge model file ``{"state_dict", "config", "var_names", "version"}`` (torch.save).

        Parameters
        ----------
        path
            Destination.
        var_names
            Gene symbols of the panel, in model order (optional).
        overwrite
            Replace an existing file at ``path`` (atomically); without it, that is a ``FileExistsError``.
        """
        from dataclasses import asdict

        from sthinge._utils import _check_output_path
        from sthinge._version import __version__
        from sthinge.io._torch import atomic_save

        _check_output_path("path", path, overwrite=overwrite)
        if var_names is not None and len(var_names) != self.n_genes:
            raise ValueError(f"var_names has {len(var_names)} entries, the model {self.n_genes} genes")
        payload = {
            "state_dict": self.state_dict(),
            "config": {"hinge": asdict(self.config), "cellfm": asdict(self.backbone_config)},
            "var_names": list(var_names) if var_names is not None else None,
            "version": __version__,
        }
        atomic_save(payload, path)  # sthinge's one atomic writer of torch files

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Hinge:
        """Read a file written by :meth:`save` (``torch.load(weights_only=True)``); ``var_names`` is kept as
        attribute ``var_names``."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        try:
            sd, cfg = payload["state_dict"], payload["config"]
            hinge_cfg, cellfm_cfg = HingeConfig(**cfg["hinge"]), CellFMConfig(**cfg["cellfm"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a sthinge model file: {err}") from err
        with torch.device("meta"):
            model = cls(CellFM(cellfm_cfg), torch.empty(hinge_cfg.n_genes, dtype=torch.long), hinge_cfg)
        model.load_state_dict(sd, strict=True, assign=True)
        model.var_names = payload.get("var_names")
        return model


_BLOCK_RE = re.compile(r"^retentionblocks\.(\d+)\.")
_VOCAB_BY_ROWS = {24_080: 24_078, 27_856: 27_855}


def load_official_hinge(
    path: str | os.PathLike,
    *,
    n_heads: int = 48,
    map_location: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> Hinge:
    """Load a checkpoint written by the official HINGE code (``donghaifang/HINGE``).

    The file is ``torch.save({"model": state_dict, "opt": ..., "epoch": ...})`` (the official ``best_weight.pt``); it is
    read with ``torch.load(weights_only=True)``. Depth, width, gene panel (buffer ``gg``), image feature size
    and vocabulary (from the ``gene_emb`` rows) are read from the tensors; the backbone uses the numerics
    profile ``"hinge-official"`` (LeakyReLU 0.01, LayerNorm eps 1e-6) and the official parametrisation.

    Parameters
    ----------
    path
        The checkpoint (``best_weight.pt``).
    n_heads
        Number of attention heads (not stored in the checkpoint; 48 for CellFM).
    map_location
        Passed to :func:`torch.load`.
    dtype
        Cast floating-point tensors to this dtype (default: as stored).
    **config_overrides
        Fields of :class:`HingeConfig` (e.g. ``n_steps``, ``mask_fill``) not stored in the checkpoint. With
        ``likelihood="gaussian"`` (official checkpoints are point models) the σ head ``std_head`` starts from its
        initialisation (σ = 1 everywhere), ready to be trained on top of the official weights.

    Returns
    -------
    Hinge
        In eval mode.

    Raises
    ------
    ValueError
        If keys are missing or unexpected or shapes disagree; the message names them.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(payload, dict) and "model" in payload:
        sd = payload["model"]
    elif isinstance(payload, dict) and "gene_emb" in payload:
        sd = payload
    else:
        raise ValueError(f"{path}: expected a dict with key 'model' (official HINGE checkpoint)")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}  # DistributedDataParallel prefix
    needed = ["gene_emb", "gg", "cond_embed.label.0.weight", "value_enc.value_enc.w3.weight"]
    missing = [k for k in needed if k not in sd]
    layers = {int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))}
    if missing or not layers:
        raise ValueError(
            f"{path}: not an official HINGE state dict; missing keys {listing(missing or ['retentionblocks.*'])}"
        )
    rows, d_model = sd["gene_emb"].shape
    if rows % 8:
        raise ValueError(
            f"{path}: gene_emb has {rows} rows, expected vocabulary size + 1 rounded up to a multiple of 8"
        )
    n_genes = sd["gg"].numel()
    cellfm_config = CellFMConfig(
        n_layers=max(layers) + 1,
        d_model=d_model,
        n_heads=n_heads,
        vocab_size=_VOCAB_BY_ROWS.get(rows, rows - 1),
        n_bins=sd["value_enc.value_enc.w3.weight"].shape[0],
        name="hinge-official",
        **NUMERICS["hinge-official"],
    )
    config = HingeConfig(n_genes=n_genes, cond_dim=sd["cond_embed.label.0.weight"].shape[1], **config_overrides)
    if config.likelihood != "point" and not any(k.startswith("std_head.") for k in sd):
        head = StdHead(d_model).to(device=sd["gene_emb"].device, dtype=sd["gene_emb"].dtype)
        sd = {**sd, **{f"std_head.{k}": v for k, v in head.state_dict().items()}}
    with torch.device("meta"):
        model = Hinge(CellFM(cellfm_config), torch.empty(n_genes, dtype=torch.long), config)
    problems = compare_state_dict(model.state_dict(), sd).problems()
    if problems:
        raise ValueError(f"{path}: cannot load official HINGE checkpoint; " + "; ".join(problems))
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    gg = model.gg
    if int(gg.min()) < 1 or int(gg.max()) > cellfm_config.vocab_size:
        raise ValueError(f"{path}: gene ids in 'gg' must lie in 1..{cellfm_config.vocab_size}")
    return model.eval()
