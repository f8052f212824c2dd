"""CellFM, the frozen single-cell foundation model that HINGE retrofits.

A faithful PyTorch re-implementation of CellFM (see Method, :ref:`method-backbone`): a gene-token transformer without
positions, whose layers are CellFM "retention" (non-causal linear attention with ReLU kernels, a per-head
RMS normalisation and a SiLU output gate) and a bilinear gated unit, both in DeepNorm-style post-norm.

The module's ``state_dict()`` keys are exactly the names of the official PyTorch port (``biomed-AI/CellFM-torch``),
so a converted checkpoint loads with ``load_state_dict`` as is::

    gene_emb, cls_token, zero_emb, value_enc.mask_emb, value_enc.value_enc.{w1,w3,table}.weight,
    value_enc.value_enc.a, [ST_emb, ST_enc.*], encoder.{i}.attn.{q,k,v,u,o}_proj.weight,
    encoder.{i}.ffn.{u,v,o}_proj.weight, encoder.{i}.post_norm{1,2}.{weight,bias},
    value_dec.w1.weight, value_dec.w2.weight, cellwise_dec.map.weight

Numerics (LeakyReLU slope, LayerNorm eps) are configuration (see Method, :ref:`method-numerics`): profile ``"cellfm"``
(0.2, 1e-7, the original MindSpore model) and ``"hinge-official"`` (0.01, 1e-6, the official HINGE code).
Modules compute in their parameters' dtype; only half precision is upcast (the RMS normalisation runs in
float32 for float16/bfloat16, as in CellFM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB_SIZE_800M = 24_078
"""Genes in CellFM's ``csv/gene_info.csv``, the vocabulary of the 800M weights."""
VOCAB_SIZE_80M = 27_855
"""Genes in CellFM's ``csv/expand_gene_info.csv``, the vocabulary of the 80M weights (and official HINGE)."""

NUMERICS: dict[str, dict[str, float]] = {
    "cellfm": {"leaky_relu_slope": 0.2, "ln_eps": 1e-7},
    "hinge-official": {"leaky_relu_slope": 0.01, "ln_eps": 1e-6},
}
"""Numerics profiles (see Method, :ref:`method-numerics`)."""


@dataclass(frozen=True)
class CellFMConfig:
    """Architecture of a CellFM backbone.

    Parameters
    ----------
    n_layers
        Number of retention layers N (the residual scale α = (2N)^¼ and init gain β = (8N)^-¼ follow it).
    d_model
        Width D.
    n_heads
        Number of heads H (d_model must be divisible by it). Not stored in checkpoints.
    vocab_size
        Number of genes V; ``gene_emb`` has V+1 rows (row 0 = padding) rounded up to a multiple of 8.
    n_bins
        Bins of the soft-binning value encoder.
    leaky_relu_slope
        Negative slope of the LeakyReLU in the value encoder and decoder (0.2 in MindSpore CellFM).
    ln_eps
        Epsilon of the post-LayerNorms (1e-7 in MindSpore CellFM).
    st_tokens
        Whether the model carries the two read-depth tokens of the 80M weights (``ST_emb``, ``ST_enc``).
    dropout
        Dropout scale: layer i drops sub-layer outputs with probability ``dropout * i / n_layers``.
    name
        Free-form name (preset name).
    """

    n_layers: int = 40
    d_model: int = 1536
    n_heads: int = 48
    vocab_size: int = VOCAB_SIZE_800M
    n_bins: int = 256
    leaky_relu_slope: float = 0.2
    ln_eps: float = 1e-7
    st_tokens: bool = False
    dropout: float = 0.1
    name: str = "cellfm-800m"

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.vocab_size < 1 or self.n_bins < 1:
            raise ValueError("vocab_size and n_bins must be positive")

    @property
    def head_dim(self) -> int:
        """Per-head width d_h = D / H."""
        return self.d_model // self.n_heads

    @property
    def n_emb_rows(self) -> int:
        """Rows of ``gene_emb``: V + 1 rounded up to a multiple of 8."""
        n = self.vocab_size + 1
        return n + (-n) % 8

    @property
    def alpha(self) -> float:
        """DeepNorm residual scale α = (2N)^¼."""
        return (2 * self.n_layers) ** 0.25

    @property
    def beta(self) -> float:
        """DeepNorm init gain β = (8N)^-¼."""
        return (8 * self.n_layers) ** -0.25

    @property
    def n_prefix(self) -> int:
        """Tokens before the genes: CLS, plus the two read-depth tokens for ``st_tokens``."""
        return 3 if self.st_tokens else 1

    def with_numerics(self, profile: str) -> CellFMConfig:
        """Return a copy with the numerics profile ``profile`` (``"cellfm"`` or ``"hinge-official"``)."""
        if profile not in NUMERICS:
            raise ValueError(f"numerics must be one of {sorted(NUMERICS)}, got {profile!r}")
        return replace(self, **NUMERICS[profile])

    @classmethod
    def from_preset(cls, name: str, /, *, numerics: str | None = None, **overrides) -> CellFMConfig:
        """Config of preset ``name`` (see :data:`PRESETS`), with a numerics profile and field overrides."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        config = PRESETS[name]
        if numerics is not None:
            config = config.with_numerics(numerics)
        return replace(config, **overrides)


PRESETS: dict[str, CellFMConfig] = {
    "tiny": CellFMConfig(n_layers=2, d_model=64, n_heads=4, vocab_size=VOCAB_SIZE_80M, name="tiny"),
    "cellfm-80m": CellFMConfig(
        n_layers=2, d_model=1536, n_heads=48, vocab_size=VOCAB_SIZE_80M, st_tokens=True, name="cellfm-80m"
    ),
    "cellfm-800m": CellFMConfig(n_layers=40, d_model=1536, n_heads=48, vocab_size=VOCAB_SIZE_800M, name="cellfm-800m"),
    # sized for pre-training on a CPU (sthinge's default backbone, see docs/pretraining.md)
    "cpu-small": CellFMConfig(n_layers=4, d_model=128, n_heads=8, vocab_size=VOCAB_SIZE_80M, name="cpu-small"),
}
"""Named CellFM configurations (numerics profile ``"cellfm"``)."""


class SoftBinning(nn.Module):
    """CellFM's scalar value encoder ("soft binning"; see Method, :ref:`method-backbone`).

    e(x) = W_T softmax(W₃h + a·h), h = LeakyReLU(w₁x). Parameters ``w1``, ``w3``, ``table`` (no bias), ``a``.
    """

    def __init__(self, d_model: int, n_bins: int = 256, leaky_relu_slope: float = 0.2) -> None:
        super().__init__()
        self.w1 = nn.Linear(1, n_bins, bias=False)
        self.w3 = nn.Linear(n_bins, n_bins, bias=False)
        self.table = nn.Linear(n_bins, d_model, bias=False)
        self.a = nn.Parameter(torch.zeros(1, 1))
        self.slope = leaky_relu_slope

    def reset_parameters(self) -> None:
        """MindSpore ``Dense`` defaults for the Linears (same as PyTorch's), ``a = 0``."""
        for lin in (self.w1, self.w3, self.table):
            lin.reset_parameters()
        nn.init.zeros_(self.a)

    #: Scalars encoded per chunk. The encoder's (n, n_bins) intermediates would otherwise reach tens of MB per
    #: call (rows x genes x 256 floats), more than a CPU cache and above glibc's mmap threshold, so that every
    #: call page-faults them in again; chunks of 8,192 scalars keep them at 8 MB. Chunking changes nothing else:
    #: every scalar is encoded on its own.
    chunk_size: int = 8192

    def _encode(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.w1(x.unsqueeze(-1).to(self.w1.weight.dtype)), self.slope)  # (n, n_bins)
        h = self.w3(h) + self.a * h
        return self.table(torch.softmax(h, dim=-1))  # (n, D)

    def forward(self, x: Tensor) -> Tensor:
        """Embed scalars ``x`` of any shape (...) into (..., D)."""
        flat = x.reshape(-1)
        if flat.shape[0] <= self.chunk_size:
            return self._encode(flat).view(*x.shape, -1)
        return torch.cat([self._encode(part) for part in flat.split(self.chunk_size)]).view(*x.shape, -1)


class ValueEncoder(nn.Module):
    """CellFM's ``value_enc``: the soft-binning encoder ``value_enc`` and the learned ``mask_emb`` (1, 1, D)."""

    def __init__(self, d_model: int, n_bins: int = 256, leaky_relu_slope: float = 0.2) -> None:
        super().__init__()
        self.value_enc = SoftBinning(d_model, n_bins, leaky_relu_slope)
        self.mask_emb = nn.Parameter(torch.zeros(1, 1, d_model))

    def forward(self, x: Tensor, visible: Tensor) -> Tensor:
        """m·e_val(x) + (1 − m)·e_mask for values ``x`` (B, L) and visibility ``visible`` (B, L) -> (B, L, D)."""
        m = visible.to(self.mask_emb.dtype).unsqueeze(-1)  # (B, L, 1)
        return m * self.value_enc(x) + (1 - m) * self.mask_emb


def _srms_scale(o: Tensor) -> Tensor:
    """1 / max(‖o‖₂/√d, 1e-12) over the last dim, shape (..., 1): O ⊙ this is CellFM's SRMS normalisation.

    The norm of half-precision input is accumulated in float32, as in CellFM.
    """
    norm = torch.linalg.vector_norm(o, dim=-1, keepdim=True, dtype=torch.float32 if o.element_size() < 4 else None)
    return (norm / math.sqrt(o.shape[-1])).clamp_min(1e-12).reciprocal().to(o.dtype)


class Retention(nn.Module):
    """CellFM multi-head retention (see Method, :ref:`method-backbone`): bidirectional linear attention.

    Q = ReLU(XW_q)/√d_h, K = κ·ReLU(XW_k)/√d_h, V = λ·κ·XW_v, U = SiLU(XW_u); per head O = SRMS(Q(KᵀV)) ⊙ U;
    output W_o concat(O). κ hides keys/values (for a 0/1 mask, masking V as well as K changes nothing).
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.u_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, key_mask: Tensor | float = 1.0, len_scale: Tensor | float = 1.0) -> Tensor:
        """Apply retention.

        Parameters
        ----------
        x
            Tokens (B, L, D).
        key_mask
            κ, 1 for tokens that act as keys/values: (B, L, 1) or a scalar.
        len_scale
            λ, scales V: a float or a (B, 1, 1) tensor.

        Returns
        -------
        (B, L, D)
        """
        B, L, D = x.shape
        H = self.n_heads
        dh = D // H
        # Work on the (B, L, H, d_h) views of the projections, so that only the small per-head states are
        # permuted. The scalars (1/√d_h on Q and K, λ on V) are applied to the (B, H, d_h, d_h) state instead of
        # the (B, L, D) tokens: the same product, computed in another order. κ scales K and V, so K gets κ².
        q = F.relu(self.q_proj(x)).view(B, L, H, dh)
        k = F.relu(self.k_proj(x))
        if not (isinstance(key_mask, float) and key_mask == 1.0):
            k = k * (key_mask * key_mask)
        v = self.v_proj(x).view(B, L, H, dh)
        u = F.silu(self.u_proj(x)).view(B, L, H, dh)
        kv = torch.matmul(k.view(B, L, H, dh).permute(0, 2, 3, 1), v.transpose(1, 2))  # (B, H, dh, dh)
        coef = len_scale / dh  # (1/√d_h)² · λ: a float or (B, 1, 1)
        kv = kv * (coef.unsqueeze(1) if isinstance(coef, Tensor) else coef)
        o = torch.matmul(q.transpose(1, 2), kv).transpose(1, 2)  # (B, L, H, dh), a view
        # U first: the product takes U's contiguous (B, L, H, dh) layout, so the reshape below copies nothing
        return self.o_proj((u * o * _srms_scale(o)).reshape(B, L, D))


class GatedLinearUnit(nn.Module):
    """CellFM's bilinear gated unit W_o((W_u x) ⊙ (W_v x)): hidden size D, no activation, no biases."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.u_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        return self.o_proj(self.u_proj(x) * self.v_proj(x))


class RetentionLayer(nn.Module):
    """One CellFM layer (post-norm): X ← LN₁(αX + Drop(R(X))); X ← LN₂(αX + Drop(G(X)))."""

    def __init__(self, config: CellFMConfig, index: int) -> None:
        super().__init__()
        D = config.d_model
        self.attn = Retention(D, config.n_heads)
        self.ffn = GatedLinearUnit(D)
        self.post_norm1 = nn.LayerNorm(D, eps=config.ln_eps)
        self.post_norm2 = nn.LayerNorm(D, eps=config.ln_eps)
        self.dropout = nn.Dropout(config.dropout * index / config.n_layers)
        self.alpha = config.alpha

    def forward(self, x: Tensor, key_mask: Tensor | float = 1.0, len_scale: Tensor | float = 1.0) -> Tensor:
        """(B, L, D) -> (B, L, D); ``key_mask`` and ``len_scale`` as in :class:`Retention`."""
        x = self.post_norm1(torch.add(self.dropout(self.attn(x, key_mask, len_scale)), x, alpha=self.alpha))
        return self.post_norm2(torch.add(self.dropout(self.ffn(x)), x, alpha=self.alpha))


class ValueDecoder(nn.Module):
    """CellFM's gene-wise value decoder ŷ = w₂ LeakyReLU(W₁h) (no biases)."""

    def __init__(self, d_model: int, leaky_relu_slope: float = 0.2) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_model, bias=False)
        self.w2 = nn.Linear(d_model, 1, bias=False)
        self.slope = leaky_relu_slope

    def forward(self, h: Tensor) -> Tensor:
        """(B, L, D) -> (B, L)."""
        return self.w2(F.leaky_relu(self.w1(h), self.slope)).squeeze(-1)


class CellwiseDecoder(nn.Module):
    """CellFM's cell-wise decoder ŷ'_j = ⟨σ(W_map E[g_j]), h_CLS⟩."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.map = nn.Linear(d_model, d_model, bias=False)

    def forward(self, gene_emb: Tensor, cls: Tensor) -> Tensor:
        """Gene-table rows (B, L, D) and CLS output (B, D) -> (B, L)."""
        return (torch.sigmoid(self.map(gene_emb)) * cls.unsqueeze(1)).sum(-1)


class CellFM(nn.Module):
    """CellFM backbone (see Method, :ref:`method-backbone`).

    Parameters
    ----------
    config
        The architecture; see :class:`CellFMConfig` and :meth:`from_preset`.

    Examples
    --------
    >>> model = CellFM.from_preset("tiny")
    >>> with torch.device("meta"):
    ...     big = CellFM.from_preset("cellfm-800m")
    >>> sum(p.numel() for p in big.parameters())
    797391105
    """

    def __init__(self, config: CellFMConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.gene_emb = nn.Parameter(torch.empty(config.n_emb_rows, D))
        self.cls_token = nn.Parameter(torch.empty(1, 1, D))
        self.zero_emb = nn.Parameter(torch.zeros(1, 1, D))
        self.value_enc = ValueEncoder(D, config.n_bins, config.leaky_relu_slope)
        if config.st_tokens:
            self.ST_emb = nn.Parameter(torch.empty(1, 2, D))
            self.ST_enc = SoftBinning(D, config.n_bins, config.leaky_relu_slope)
        self.encoder = nn.ModuleList(RetentionLayer(config, i) for i in range(config.n_layers))
        self.value_dec = ValueDecoder(D, config.leaky_relu_slope)
        self.cellwise_dec = CellwiseDecoder(D)
        # variant chosen at construction: which tokens precede the genes
        self._prefix = self._prefix_st if config.st_tokens else self._prefix_cls
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, /, *, numerics: str | None = None, **overrides) -> CellFM:
        """Build preset ``name`` (``"tiny"``, ``"cellfm-80m"``, ``"cellfm-800m"``) with random weights.

        Parameters
        ----------
        name
            Preset name, see :data:`PRESETS`.
        numerics
            Numerics profile (``"cellfm"`` default, ``"hinge-official"``).
        **overrides
            Fields of :class:`CellFMConfig` to replace.
        """
        return cls(CellFMConfig.from_preset(name, numerics=numerics, **overrides))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """CellFM's initialisation, as in its original MindSpore code (it matters only when training from scratch)."""
        beta = self.config.beta
        nn.init.xavier_normal_(self.gene_emb, gain=0.5)
        self.gene_emb[0].zero_()
        nn.init.xavier_normal_(self.cls_token, gain=0.5)
        nn.init.zeros_(self.zero_emb)
        nn.init.zeros_(self.value_enc.mask_emb)
        self.value_enc.value_enc.reset_parameters()
        if self.config.st_tokens:
            nn.init.xavier_normal_(self.ST_emb, gain=0.5)  # not specified by CellFM's code; same as the tokens
            self.ST_enc.reset_parameters()
        for layer in self.encoder:
            nn.init.xavier_normal_(layer.attn.q_proj.weight, gain=1.0)
            nn.init.xavier_normal_(layer.attn.k_proj.weight, gain=1.0)
            for lin in (layer.attn.v_proj, layer.attn.u_proj, layer.attn.o_proj, *layer.ffn.children()):
                nn.init.xavier_normal_(lin.weight, gain=beta)
            for ln in (layer.post_norm1, layer.post_norm2):
                ln.reset_parameters()
        self.value_dec.w1.reset_parameters()
        self.value_dec.w2.reset_parameters()
        self.cellwise_dec.map.reset_parameters()

    @property
    def alpha(self) -> float:
        """Residual scale α = (2N)^¼ of the configured depth."""
        return self.config.alpha

    # ---- the backbone contract (:mod:`sthinge.models.backbone`) ------------------------------------------------
    kind = "cellfm"
    first_gene_id = 1  # id 0 is padding

    @property
    def blocks(self) -> nn.ModuleList:
        """The retention layers (:class:`RetentionLayer`) that HINGE wraps with SoftAdaLN."""
        return self.encoder

    def decode(self, h: Tensor) -> Tensor:
        """The value decoder: hidden gene tokens (B, L, D) -> expression (B, L)."""
        return self.value_dec(h)

    def vocabulary(self) -> tuple[str, ...]:
        """Gene symbols in id order (the id of ``vocabulary()[i]`` is ``i + 1``): the CellFM vocabulary shipped with
        sthinge whose size is ``config.vocab_size``.

        Raises
        ------
        ValueError
            If no shipped vocabulary has that size (a backbone built with a made-up ``vocab_size``).
        """
        from sthinge._vocab import VOCAB_SIZES, cellfm_vocab  # package data only (no AnnData)

        if self.config.vocab_size not in VOCAB_SIZES:
            raise ValueError(
                f"this CellFM has vocab_size={self.config.vocab_size}; only the shipped CellFM vocabularies "
                f"{VOCAB_SIZES} have gene symbols"
            )
        return cellfm_vocab(self.config.vocab_size)

    def gene_ids(self, symbols) -> list[int]:
        """Ids of gene ``symbols`` in the backbone's vocabulary.

        Raises
        ------
        KeyError
            Naming the symbols that are not in the vocabulary (the first few) and how many there are.
        """
        return _lookup(self.vocabulary(), symbols, self.first_gene_id, "CellFM")

    def pretraining_loss(
        self, gene_ids: Tensor, values: Tensor, pad: Tensor, *, mask_ratio: float, generator: torch.Generator | None
    ) -> Tensor:
        """CellFM's own pre-training objective on (B, L) ids, values and pad flags: :func:`masked_value_loss`."""
        return masked_value_loss(self, gene_ids, values, pad, mask_ratio=mask_ratio, generator=generator)

    def embed_genes(self, gene_ids: Tensor) -> Tensor:
        """Gene-table lookup: ids (...) -> (..., D)."""
        return F.embedding(gene_ids, self.gene_emb)

    def encode_values(self, values: Tensor) -> Tensor:
        """Soft-binning value embedding e_val: (...) -> (..., D); no mask token."""
        return self.value_enc.value_enc(values)

    def _prefix_cls(self, batch: int, depth: Tensor | None) -> Tensor:
        return self.cls_token.expand(batch, 1, -1)  # (B, 1, D)

    def _prefix_st(self, batch: int, depth: Tensor | None) -> Tensor:
        if depth is None:
            raise ValueError("this CellFM has read-depth tokens: pass depth=(S, T) totals of shape (B, 2)")
        st = self.ST_emb + self.ST_enc(torch.log1p(depth / 1000.0))  # (B, 2, D)
        return torch.cat([self.cls_token.expand(batch, 1, -1), st], dim=1)  # (B, 3, D)

    def forward(
        self, gene_ids: Tensor, values: Tensor, visible: Tensor, pad: Tensor, depth: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Plain CellFM forward (see Method, :ref:`method-backbone`), as used in pre-training.

        Parameters
        ----------
        gene_ids
            (B, L) long, CellFM gene ids (0 on pads).
        values
            (B, L) expression values (log1p CP10k).
        visible
            (B, L) 1 where the value is shown, 0 where it is hidden behind ``mask_emb``.
        pad
            (B, L) bool or 0/1, **1 on padding positions**.
        depth
            (B, 2) read depths (S, T); required only for configs with ``st_tokens`` (the S-T tokens always
            add ``ST_enc``, as the MindSpore reference does).

        Returns
        -------
        value_pred
            (B, L) gene-wise value predictions.
        cls
            (B, D) final CLS embedding.
        """
        B, L = gene_ids.shape
        dtype = self.gene_emb.dtype
        real = 1 - pad.to(dtype)  # (B, L) z without the CLS
        vis = visible.to(dtype) * real
        tokens = self.embed_genes(gene_ids) + self.value_enc(values, vis)  # (B, L, D)
        prefix = self._prefix(B, depth)  # (B, P, D)
        P = prefix.shape[1]
        x = torch.cat([prefix, tokens * real.unsqueeze(-1)], dim=1)  # (B, P+L, D)
        ones = real.new_ones(B, P)
        early = torch.cat([ones, vis], dim=1).unsqueeze(-1)  # κ for layers < N/2: (B, P+L, 1)
        late = torch.cat([ones, real], dim=1).unsqueeze(-1)  # κ for layers >= N/2
        len_scale = real.sum(1).clamp_min(1).rsqrt().view(B, 1, 1)  # λ = 1/√n, a constant of the input
        half = self.config.n_layers // 2
        for i, layer in enumerate(self.encoder):
            x = layer(x, early if i < half else late, len_scale)
        return self.value_dec(x[:, P:]), x[:, 0]

    def cellwise(self, gene_ids: Tensor, cls: Tensor) -> Tensor:
        """Cell-wise predictions ⟨σ(W_map E[g]), h_CLS⟩: ids (B, L), CLS (B, D) -> (B, L)."""
        return self.cellwise_dec(self.embed_genes(gene_ids), cls)


def _lookup(vocabulary, symbols, first_id: int, what: str) -> list[int]:
    """Ids of ``symbols`` in ``vocabulary`` (symbols in id order, the first with id ``first_id``); a KeyError names
    the symbols that are missing."""
    index = {g: i + first_id for i, g in enumerate(vocabulary)}
    symbols = list(symbols)
    missing = [g for g in symbols if g not in index]
    if missing:
        raise KeyError(
            f"{len(missing)} of {len(symbols)} gene(s) are not in the {len(index)}-token {what} vocabulary: "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    return [index[g] for g in symbols]


def pretraining_masks(
    pad: Tensor, *, mask_ratio: float = 0.2, hide_ratio: float = 0.8, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """CellFM's pre-training masks (see Method, :ref:`method-backbone`).

    Per cell, ⌊mask_ratio·n⌋ of the n real genes are chosen at random; the first ⌊hide_ratio·that⌋ are
    hidden, the rest stay visible; all chosen genes are scored. If none is chosen, all n genes are scored.

    Parameters
    ----------
    pad
        (B, L) 1 on padding positions.
    mask_ratio, hide_ratio
        Fractions of genes chosen and of chosen genes hidden.
    generator
        Random generator (on CPU or on ``pad``'s device).

    Returns
    -------
    visible
        (B, L) float, 0 on hidden genes and pads.
    weight
        (B, L) float loss weights.
    """
    real = 1 - pad.float()
    gen_device = generator.device if generator is not None else pad.device
    noise = torch.rand(pad.shape, generator=generator, device=gen_device).to(pad.device)
    noise = noise.masked_fill(real == 0, 2.0)  # pads rank last
    rank = noise.argsort(dim=1).argsort(dim=1)  # (B, L) rank of each position among the cell's genes
    n = real.sum(1, keepdim=True)
    n_chosen = torch.floor(mask_ratio * n)
    n_hidden = torch.floor(hide_ratio * n_chosen)
    chosen = (rank < n_chosen).float()
    hidden = (rank < n_hidden).float()
    weight = torch.where(n_chosen > 0, chosen, real)
    return real - hidden, weight


def masked_value_loss(
    model: CellFM,
    gene_ids: Tensor,
    values: Tensor,
    pad: Tensor,
    *,
    depth: Tensor | None = None,
    mask_ratio: float = 0.2,
    hide_ratio: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CellFM's pre-training objective (see Method, :ref:`method-backbone`), in float32.

    Σw(ŷ−y)²/Σw + Σw(ŷ'−y)²/Σw over the whole batch, with ŷ the value decoder's and ŷ' the cell-wise
    decoder's predictions and w, the masks, from :func:`pretraining_masks`.

    Parameters
    ----------
    model
        The CellFM to train.
    gene_ids, values, pad
        (B, L) inputs as in :meth:`CellFM.forward` (``values`` are also the targets).
    depth
        (B, 2) read depths for models with S-T tokens.
    mask_ratio, hide_ratio, generator
        See :func:`pretraining_masks`.

    Returns
    -------
    Scalar loss.
    """
    visible, weight = pretraining_masks(pad, mask_ratio=mask_ratio, hide_ratio=hide_ratio, generator=generator)
    value_pred, cls = model(gene_ids, values, visible, pad, depth)
    cell_pred = model.cellwise(gene_ids, cls)
    y = values.float()
    denom = weight.sum().clamp_min(1)
    value_term = (weight * (value_pred.float() - y) ** 2).sum() / denom
    cell_term = (weight * (cell_pred.float() - y) ** 2).sum() / denom
    return value_term + cell_term
