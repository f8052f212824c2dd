"""scGPT, a second frozen single-cell foundation model for HINGE to retrofit.

A PyTorch re-implementation of the perception path of scGPT (bowang-lab/scGPT): gene tokens and their expression
values are embedded, summed, passed through post-norm transformer encoder layers (no positions), and an MLP reads
one expression value per token. Written from the facts of scGPT's code, not copied from it; references below are to
``scgpt/model/model.py`` of bowang-lab/scGPT at commit ``cebd6fae`` (``main``, April 2026) unless a commit is named
(``4068d67c`` is the pre-training version of August 2023 that wrote the published whole-human checkpoint).

The module's ``state_dict()`` keys are exactly the published names, with attention in PyTorch's layout::

    encoder.embedding.weight, encoder.enc_norm.{weight,bias},
    value_encoder.linear1.{weight,bias}, value_encoder.linear2.{weight,bias}, value_encoder.norm.{weight,bias},
    transformer_encoder.layers.{i}.self_attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias},
    transformer_encoder.layers.{i}.{linear1,linear2,norm1,norm2}.{weight,bias},
    decoder.fc.{0,2,4}.{weight,bias}

The published checkpoint stores attention in flash-attn's ``self_attn.Wqkv.*`` layout; :func:`sthinge.io.load_scgpt`
converts it. Heads outside the per-token expression path (``cls_decoder``, ``mvc_decoder``, ``flag_encoder``, ...)
are not part of this module.

Numerics (all verified in scGPT's code): every LayerNorm has PyTorch's default eps 1e-5 (``GeneEncoder`` L728,
``ContinuousValueEncoder`` L770, the layers' ``layer_norm_eps=1e-5`` L622/L645-646 and PyTorch's
``TransformerEncoderLayer`` default); the layers' feed-forward activation is ReLU (L621, L657-658 and PyTorch's
default); the value encoder clamps values from above at ``max_value=512`` (L764, L782), never from below; the
expression decoder's activations are ``nn.LeakyReLU()`` with the default slope 0.01 (L851-857).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WHOLE_HUMAN_VOCAB_SIZE = 60_697
"""Tokens of the whole-human vocabulary: the 60,694 genes of scGPT's ``scgpt/tokenizer/default_census_vocab.json``
(commit ``4068d67c``) plus ``<pad>``, ``<cls>``, ``<eoc>``, which its pre-training script appends when missing
(``examples/pretrain.py`` L374, L476-478 at ``4068d67c``). scGPT's tutorials print "vocabulary of size 60697" and
load ``encoder.embedding.weight`` of shape [60697, 512] from the whole-human folder
(``tutorials/Tutorial_Perturbation.ipynb``)."""

MAX_VALUE = 512.0
"""Upper clamp of scGPT's continuous value encoder (``ContinuousValueEncoder(max_value=512)``, model.py L764, L782;
``TransformerModel`` never passes another value, L83)."""

MASK_VALUE = -1.0
"""scGPT's ``mask_value``: the input value of a hidden gene in its masked-value pre-training."""

PAD_TOKEN, CLS_TOKEN, EOC_TOKEN = "<pad>", "<cls>", "<eoc>"
SPECIAL_TOKENS = (PAD_TOKEN, CLS_TOKEN, EOC_TOKEN)
"""scGPT's special tokens, appended after the genes of its vocabularies."""

NORM_EPS = 1e-5
"""Epsilon of every LayerNorm of scGPT (PyTorch's default; see the module docstring)."""


@dataclass(frozen=True)
class ScGPTConfig:
    """Architecture of an scGPT backbone.

    Parameters
    ----------
    vocab_size
        Number of gene tokens (rows of ``encoder.embedding.weight``), special tokens included.
    d_model
        Width (scGPT's ``embsize``).
    n_heads
        Attention heads (``nheads``); ``d_model`` must be divisible by it.
    d_hid
        Hidden width of each layer's feed-forward network (``d_hid``).
    n_layers
        Number of transformer encoder layers (``nlayers``).
    dropout
        Dropout probability (``dropout``): on the value embedding, the attention weights, inside the feed-forward
        network and on both residual branches, as in scGPT. Active only in train mode.
    pad_token_id
        Id of the padding token (the ``padding_idx`` of the gene embedding: its row gets no gradient); ``None``
        for none. It does not change the forward pass.
    max_value
        Values above it are clamped before the value encoder (scGPT: 512).
    norm_eps
        Epsilon of all LayerNorms (scGPT: 1e-5).
    name
        Free-form name (preset name).
    """

    vocab_size: int = WHOLE_HUMAN_VOCAB_SIZE
    d_model: int = 512
    n_heads: int = 8
    d_hid: int = 512
    n_layers: int = 12
    dropout: float = 0.2
    pad_token_id: int | None = WHOLE_HUMAN_VOCAB_SIZE - 3
    max_value: float = MAX_VALUE
    norm_eps: float = NORM_EPS
    name: str = "whole-human"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "d_model", "n_heads", "d_hid", "n_layers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} is not a token id (vocab_size={self.vocab_size})")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be positive, got {self.norm_eps!r}")

    @property
    def head_dim(self) -> int:
        """Per-head width d_model / n_heads."""
        return self.d_model // self.n_heads

    @classmethod
    def from_preset(cls, name: str, /, **overrides) -> ScGPTConfig:
        """Config of preset ``name`` (see :data:`SCGPT_PRESETS`), with field overrides."""
        if name not in SCGPT_PRESETS:
            raise ValueError(f"preset must be one of {sorted(SCGPT_PRESETS)}, got {name!r}")
        return replace(SCGPT_PRESETS[name], **overrides)

    @classmethod
    def from_args_json(
        cls, args: Mapping[str, Any], vocab_size: int, *, pad_token_id: int | None = None, name: str = "scgpt"
    ) -> ScGPTConfig:
        """Config from the ``args.json`` of an scGPT checkpoint folder.

        Parameters
        ----------
        args
            The parsed ``args.json``: ``embsize``, ``nheads``, ``d_hid`` and ``nlayers`` are required; ``dropout``
            is read when present (default 0.2, the pre-training script's). ``input_emb_style``, when present,
            must be ``"continuous"``; ``pre_norm``, when present, must be false (the published models are
            post-norm). Other fields (``n_bins``, ``pad_value``, ``max_seq_len``, ...) describe the data and are
            not read here.
        vocab_size
            Number of tokens of the folder's ``vocab.json``.
        pad_token_id
            Id of ``args["pad_token"]`` in the vocabulary.
        name
            Name of the config.

        Raises
        ------
        ValueError
            Naming the field that is missing or invalid.
        """
        if not isinstance(args, Mapping):
            raise ValueError(f"args.json must hold a JSON object, got {type(args).__name__}")
        dims = {}
        for key in ("embsize", "nheads", "d_hid", "nlayers"):
            if key not in args:
                raise ValueError(f"args.json lacks the field {key!r}")
            value = args[key]
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"args.json field {key!r} must be a positive integer, got {args[key]!r}")
            dims[key] = value
        dropout = args.get("dropout", 0.2)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"args.json field 'dropout' must be a number in [0, 1), got {dropout!r}")
        style = args.get("input_emb_style", "continuous")
        if style != "continuous":
            raise ValueError(
                f"args.json field 'input_emb_style' is {style!r}; only 'continuous' (scGPT's default and the "
                "published models') is supported"
            )
        if args.get("pre_norm", False):
            raise ValueError("args.json field 'pre_norm' is true; only post-norm scGPT models are supported")
        if dims["embsize"] % dims["nheads"]:
            raise ValueError(
                f"args.json field 'embsize' ({dims['embsize']}) is not divisible by 'nheads' ({dims['nheads']})"
            )
        return cls(
            vocab_size=vocab_size,
            d_model=dims["embsize"],
            n_heads=dims["nheads"],
            d_hid=dims["d_hid"],
            n_layers=dims["nlayers"],
            dropout=float(dropout),
            pad_token_id=pad_token_id,
            name=name,
        )


SCGPT_PRESETS: dict[str, ScGPTConfig] = {
    # the published whole-human model: embsize 512, nheads 8, d_hid 512, nlayers 12, dropout 0.2 (its args.json as
    # scGPT's tutorials load it; the shapes [60697, 512], [1536, 512] (Wqkv), [512, 512] (linear1) and layers 0-11
    # are printed by Tutorial_Perturbation.ipynb)
    "whole-human": ScGPTConfig(),
    "tiny": ScGPTConfig(vocab_size=100, d_model=64, n_heads=4, d_hid=64, n_layers=2, pad_token_id=97, name="tiny"),
}
"""Named scGPT configurations."""


class GeneEncoder(nn.Module):
    """scGPT's gene-token encoder: an embedding table followed by a LayerNorm (model.py L717-733)."""

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None = None, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, gene_ids: Tensor) -> Tensor:
        """Ids (...) -> (..., D)."""
        return self.enc_norm(self.embedding(gene_ids))


class ContinuousValueEncoder(nn.Module):
    """scGPT's continuous value encoder (model.py L759-786).

    e(x) = Dropout(LN(W₂ ReLU(w₁ min(x, max_value) + b₁) + b₂)): one scalar per token to a D-vector. Only the upper
    clamp applies: scGPT's negative pad (-2) and mask (-1) values pass unchanged.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, max_value: float = MAX_VALUE, eps: float = NORM_EPS):
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def forward(self, values: Tensor) -> Tensor:
        """Values (...) -> (..., D)."""
        x = values.to(self.linear1.weight.dtype).unsqueeze(-1).clamp(max=self.max_value)
        return self.dropout(self.norm(self.linear2(F.relu(self.linear1(x)))))


class ScGPTLayer(nn.Module):
    """One post-norm transformer encoder layer of scGPT, in the parameter names of PyTorch's
    ``nn.TransformerEncoderLayer`` (scGPT builds that class when flash-attn is off, model.py L124-127, and the
    flash layer ``FlashTransformerEncoderLayer`` computes the same, L699-712):

    x ← norm1(x + Drop(SelfAttn(x))); x ← norm2(x + Drop(W₂ Drop(ReLU(W₁x + b₁)) + b₂)).

    :meth:`attention` and :meth:`feed_forward` are the two sub-layers without their residuals and norms, for
    modules that rewire the block (HINGE's SoftAdaLN).
    """

    def __init__(self, d_model: int, n_heads: int, d_hid: int, dropout: float = 0.0, eps: float = NORM_EPS) -> None:
        super().__init__()
        # scGPT passes its dropout to the attention weights too (model.py L634; nn.TransformerEncoderLayer does so)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, d_hid)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_hid, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def attention(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Multi-head self-attention (B, L, D) -> (B, L, D); ``key_padding_mask`` (B, L) bool, True on pads."""
        return self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]

    def feed_forward(self, x: Tensor) -> Tensor:
        """W₂ Drop(ReLU(W₁x + b₁)) + b₂: (B, L, D) -> (B, L, D)."""
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, x: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """(B, L, D) -> (B, L, D); ``src_key_padding_mask`` (B, L) bool, True on padding positions."""
        x = self.norm1(x + self.dropout1(self.attention(x, src_key_padding_mask)))
        return self.norm2(x + self.dropout2(self.feed_forward(x)))


class ScGPTEncoderStack(nn.Module):
    """Holds the layers under the published name ``transformer_encoder.layers`` (scGPT wraps them in PyTorch's
    ``nn.TransformerEncoder`` without a final norm, model.py L122, L127)."""

    def __init__(self, config: ScGPTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ScGPTLayer(config.d_model, config.n_heads, config.d_hid, config.dropout, config.norm_eps)
            for _ in range(config.n_layers)
        )

    def forward(self, x: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Apply the layers in turn."""
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=src_key_padding_mask)
        return x


class ExprDecoder(nn.Module):
    """scGPT's expression decoder (model.py L842-876, ``explicit_zero_prob=False``, no batch labels): an MLP
    D -> D -> D -> 1 with LeakyReLU(0.01) activations, ``fc.{0,2,4}`` in the published names."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(d_model, d_model),
            nn.LeakyReLU(),
            nn.Linear(d_model, d_model),
            nn.LeakyReLU(),
            nn.Linear(d_model, 1),
        )

    def features(self, h: Tensor) -> Tensor:
        """The last hidden units, LeakyReLU(fc.2(LeakyReLU(fc.0(h)))): (B, L, D) -> (B, L, D)."""
        return self.fc[3](self.fc[2](self.fc[1](self.fc[0](h))))

    def readout(self, a: Tensor) -> Tensor:
        """The output layer fc.4 on the last hidden units: (B, L, D) -> (B, L)."""
        return self.fc[4](a).squeeze(-1)

    def forward(self, h: Tensor) -> Tensor:
        """(B, L, D) -> (B, L)."""
        return self.fc(h).squeeze(-1)


def _as_padding_mask(padding_mask: Tensor | None, shape: torch.Size) -> Tensor | None:
    if padding_mask is None:
        return None
    if tuple(padding_mask.shape) != tuple(shape):
        raise ValueError(f"padding_mask has shape {tuple(padding_mask.shape)}, expected {tuple(shape)}")
    return padding_mask if padding_mask.dtype == torch.bool else padding_mask != 0


class ScGPT(nn.Module):
    """scGPT backbone: the perception path of scGPT's ``TransformerModel`` with ``input_emb_style="continuous"``.

    Parameters
    ----------
    config
        The architecture; see :class:`ScGPTConfig` and :meth:`from_preset`.

    Notes
    -----
    ``forward(gene_ids, values, padding_mask)`` computes scGPT's ``_encode`` (gene embedding + value embedding,
    summed, model.py L169-177; then the layers with ``src_key_padding_mask``, L187-189) followed by
    ``decoder(...)["pred"]`` (L345-361). scGPT's flash-attn path computes attention in half precision and
    returns zeros for padded queries; here attention is exact in the module's dtype and padded positions carry
    values that mean nothing. Each row needs at least one non-padded token (a fully padded row has no keys).

    Examples
    --------
    >>> model = ScGPT.from_preset("tiny").eval()
    >>> ids = torch.randint(0, 97, (2, 5))
    >>> model(ids, torch.rand(2, 5)).shape
    torch.Size([2, 5])
    """

    def __init__(self, config: ScGPTConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.encoder = GeneEncoder(config.vocab_size, D, config.pad_token_id, config.norm_eps)
        self.value_encoder = ContinuousValueEncoder(D, config.dropout, config.max_value, config.norm_eps)
        self.transformer_encoder = ScGPTEncoderStack(config)
        self.decoder = ExprDecoder(D)
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, /, **overrides) -> ScGPT:
        """Build preset ``name`` (``"whole-human"``, ``"tiny"``) with random weights; ``overrides`` replace fields
        of :class:`ScGPTConfig`."""
        return cls(ScGPTConfig.from_preset(name, **overrides))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """scGPT's initialisation: the gene embedding uniform in [-0.1, 0.1] (``init_weights``, model.py L155-158),
        everything else PyTorch's default. It matters only when training from scratch."""
        if self.encoder.embedding.weight.is_meta:
            return
        self.encoder.embedding.weight.uniform_(-0.1, 0.1)

    # ---- the backbone contract (:mod:`sthinge.models.backbone`) ------------------------------------------------
    kind = "scgpt"
    first_gene_id = 0
    vocab: dict[str, int] | None = None
    """Token -> id, special tokens included (``vocab.json``); set by :func:`sthinge.io.load_scgpt` and
    :func:`sthinge.tl.pretrain_backbone`, ``None`` for a module built from a config alone."""

    def _vocab(self) -> dict[str, int]:
        if self.vocab is None:
            raise ValueError(
                "this scGPT has no vocabulary (`vocab` is None): load it with `sthinge.io.load_scgpt(folder)`, "
                "which reads the folder's vocab.json, or set `model.vocab` to its token -> id dict"
            )
        return self.vocab

    def vocabulary(self) -> tuple[str, ...]:
        """Tokens in id order (special tokens included)."""
        vocab = self._vocab()
        return tuple(sorted(vocab, key=vocab.__getitem__))

    def gene_ids(self, symbols) -> list[int]:
        """Ids of gene ``symbols`` in the backbone's vocabulary.

        Raises
        ------
        KeyError
            Naming the symbols that are not in the vocabulary (the first few) and how many there are.
        ValueError
            If the module has no vocabulary (see :attr:`vocab`).
        """
        vocab = self._vocab()
        symbols = list(symbols)
        missing = [g for g in symbols if g not in vocab or g in SPECIAL_TOKENS]
        if missing:
            raise KeyError(
                f"{len(missing)} of {len(symbols)} gene(s) are not in the {len(vocab)}-token scGPT vocabulary: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        return [vocab[g] for g in symbols]

    @property
    def cls_token_id(self) -> int:
        """Id of ``<cls>`` in the vocabulary."""
        vocab = self._vocab()
        if CLS_TOKEN not in vocab:
            raise ValueError(f"the vocabulary has no {CLS_TOKEN!r} token")
        return vocab[CLS_TOKEN]

    def pretraining_loss(
        self, gene_ids: Tensor, values: Tensor, pad: Tensor, *, mask_ratio: float, generator: torch.Generator | None
    ) -> Tensor:
        """scGPT's masked value objective (its ``random_mask_value`` + ``masked_mse_loss``), float32.

        In each row, ⌊``mask_ratio``·n⌋ of the n real (non-pad) tokens, at least one, get scGPT's mask value
        (:data:`MASK_VALUE`, -1) as input; the loss is the mean squared error of the prediction on them. A
        ``<cls>`` token with value 0 leads each row, as in HINGE; pads are hidden keys.

        Parameters
        ----------
        gene_ids, values
            (B, L) ids (in this vocabulary) and expression (the targets).
        pad
            (B, L) 1 / True on padding positions.
        mask_ratio
            Fraction of the real tokens hidden.
        generator
            Random generator (CPU or on the inputs' device).
        """
        pad = pad.bool()
        B = gene_ids.shape[0]
        real = ~pad
        gen_device = generator.device if generator is not None else gene_ids.device
        noise = torch.rand(pad.shape, generator=generator, device=gen_device).to(gene_ids.device)
        noise = noise.masked_fill(pad, 2.0)
        rank = noise.argsort(dim=1).argsort(dim=1)
        n_hidden = torch.floor(mask_ratio * real.sum(1, keepdim=True)).clamp_min(1)
        hidden = (rank < n_hidden) & real
        inputs = torch.where(hidden, torch.full_like(values, MASK_VALUE), values)
        cls = torch.full((B, 1), self.cls_token_id, dtype=gene_ids.dtype, device=gene_ids.device)
        ids = torch.cat([cls, gene_ids], dim=1)
        inputs = torch.cat([inputs.new_zeros(B, 1), inputs], dim=1)
        mask = torch.cat([pad.new_zeros(B, 1), pad], dim=1)
        pred = self(ids, inputs, mask)[:, 1:].float()
        w = hidden.float()
        return (w * (pred - values.float()) ** 2).sum() / w.sum().clamp_min(1)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer encoder layers (:class:`ScGPTLayer`), each callable as
        ``block(x, src_key_padding_mask=mask)``."""
        return self.transformer_encoder.layers

    def embed_genes(self, gene_ids: Tensor) -> Tensor:
        """Gene-token embedding with its LayerNorm: ids (...) -> (..., D)."""
        return self.encoder(gene_ids)

    def encode_values(self, values: Tensor) -> Tensor:
        """Continuous value embedding (clamped at ``max_value``): values (...) -> (..., D)."""
        return self.value_encoder(values)

    def embed(self, gene_ids: Tensor, values: Tensor) -> Tensor:
        """Input tokens: gene embedding + value embedding, ids and values (B, L) -> (B, L, D)."""
        return self.embed_genes(gene_ids) + self.encode_values(values)

    def encode(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Hidden states after the last layer: (B, L) inputs -> (B, L, D).

        ``padding_mask`` (B, L) is True (or non-zero) on padding positions, which are hidden as keys.
        """
        mask = _as_padding_mask(padding_mask, gene_ids.shape)
        return self.transformer_encoder(self.embed(gene_ids, values), src_key_padding_mask=mask)

    def decode(self, h: Tensor) -> Tensor:
        """Per-token expression read-out: hidden states (B, L, D) -> (B, L)."""
        return self.decoder(h)

    def forward(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """scGPT's masked-value prediction (``mlm_output``).

        Parameters
        ----------
        gene_ids
            (B, L) long token ids.
        values
            (B, L) expression values (in scGPT's own convention: binned, with its ``pad_value`` on pads and its
            ``mask_value`` on hidden values).
        padding_mask
            (B, L) True on padding positions; ``None`` for none.

        Returns
        -------
        (B, L) predicted expression per token.
        """
        return self.decode(self.encode(gene_ids, values, padding_mask))
