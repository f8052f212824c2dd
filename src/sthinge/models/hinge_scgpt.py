"""HINGE on scGPT: a frozen :class:`~sthinge.models.scgpt.ScGPT` retrofitted with SoftAdaLN, as a masked-diffusion
denoiser over G genes, with the call signature of :class:`~sthinge.models.hinge.Hinge`.

Each scGPT encoder layer (post-norm: ``x ← norm1(x + attn(x)); x ← norm2(x + ffn(x))``) becomes
``x ← norm1(x + τ_a ⊙ attn(SoftAdaLN_a(x, c))); x ← norm2(x + τ_f ⊙ ffn(SoftAdaLN_f(x, c)))``: the SoftNorm and
modulation before each frozen sub-layer and the gate on its residual branch, as HINGE does for CellFM (Eqs. 3–5 of
the paper, with scGPT's residual weight 1 for CellFM's α). The read-out is an ungated SoftAdaLN before scGPT's
expression decoder. With ``init="exact-identity"`` every added module starts as the identity, so at initialisation
the model computes exactly the bare scGPT on the same tokens.

What sthinge keeps of scGPT's input convention, and what it changes for masked diffusion:

- kept: the gene tokens (the panel's ids in scGPT's vocabulary, with its gene embedding and LayerNorm), a leading
  ``<cls>`` token (value 0), the continuous value encoder with its clamp, the padding mask as key mask;
- changed: values are the log-normalised expression the model is trained on, not scGPT's per-cell bins (the
  diffusion reveals genes one step at a time, and bins recomputed over the revealed genes would change as genes
  appear); a masked gene carries scGPT's mask value (-1) as its value, scGPT's own way of hiding an input value,
  and is also hidden as a key in the first half of the layers, as HINGE does for CellFM; there are no ``<pad>``
  tokens, since a panel has a fixed length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sthinge.models.hinge import HingeConfig, check_gene_ids
from sthinge.models.likelihood import StdHead
from sthinge.models.scgpt import MASK_VALUE, ScGPT, ScGPTLayer
from sthinge.models.softadaln import (
    AdaLNModulation,
    HiddenModulation,
    SoftAdaLN,
    SoftNorm,
    SumCondition,
    gated_residual,
    modulate,
)

__all__ = ["HingeScGPT", "ScGPTHingeBlock", "SCGPT_MASK_VALUE"]

SCGPT_MASK_VALUE = MASK_VALUE  # scGPT's mask_value: the input value of a hidden gene in its pre-training


class ScGPTHingeBlock(nn.Module):
    """An scGPT encoder layer (frozen; ``layer``) with SoftAdaLN before each sub-layer and gated residuals; with
    ``hidden=True`` the feed-forward's ``d_hid`` hidden units are also scaled by (1 + s(c)) (``ffn_hidden``)."""

    def __init__(
        self, layer: ScGPTLayer, dropout: float, init: str, softnorm: bool = True, hidden: bool = False
    ) -> None:
        super().__init__()
        self.layer = layer
        d_model = layer.norm1.normalized_shape[0]
        self.pre_norm1 = SoftNorm(init) if softnorm else nn.Identity()
        self.pre_norm2 = SoftNorm(init) if softnorm else nn.Identity()
        self.adaln = AdaLNModulation(d_model, 6, (2, 5), init)
        self.ffn_hidden = HiddenModulation(d_model, layer.linear1.out_features) if hidden else None
        self.dropout = nn.Dropout(dropout)

    def _ffn(self, x: Tensor, c: Tensor) -> Tensor:
        if self.ffn_hidden is None:
            return self.layer.feed_forward(x)
        f = self.layer
        return f.linear2(f.dropout(self.ffn_hidden(F.relu(f.linear1(x)), c)))

    def forward(self, x: Tensor, c: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """Tokens (B, L, D), condition (B, D), key mask (B, L) True on hidden keys (or None) -> (B, L, D)."""
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.adaln(c)
        tau_a, tau_f = self.adaln.gate_fn(gate_a), self.adaln.gate_fn(gate_f)
        u = self.layer.attention(modulate(self.pre_norm1(x), shift_a, scale_a), key_padding_mask)
        x = gated_residual(self.dropout(u), x, tau_a, 1.0, self.layer.norm1)
        u = self._ffn(modulate(self.pre_norm2(x), shift_f, scale_f), c)
        return gated_residual(self.dropout(u), x, tau_f, 1.0, self.layer.norm2)


class HingeScGPT(nn.Module):
    """HINGE denoiser f_θ(x_t, t, v) -> x̂₀ on a frozen scGPT backbone.

    Parameters
    ----------
    backbone
        A (pre-trained) :class:`~sthinge.models.scgpt.ScGPT`; its modules are reused (and frozen), not copied.
    gene_ids
        (G,) ids of the panel's genes in the backbone's vocabulary, in the model's gene order.
    config
        A :class:`~sthinge.models.hinge.HingeConfig` (``n_genes`` = G). Used here: ``cond_dim``, ``n_steps``,
        ``init``, ``dropout``, ``time_dim``, ``variant`` (``"hinge"`` or ``"nosoftnorm"``), ``likelihood`` (with
        ``"gaussian"`` a σ head reads the decoder's input, as for CellFM) and the diffusion settings. The
        condition is the official sum of time, image and mask embeddings.
    cls_token_id
        Id of ``<cls>`` in the backbone's vocabulary; default the backbone's (:attr:`ScGPT.cls_token_id`, from its
        ``vocab``).

    Examples
    --------
    >>> backbone = ScGPT.from_preset("tiny")
    >>> model = HingeScGPT(backbone, torch.arange(3, 23), HingeConfig(n_genes=20, cond_dim=8), cls_token_id=1)
    >>> x0_hat = model(torch.rand(2, 20), torch.full((2,), 50), torch.zeros(2, 20), torch.zeros(2, 20),
    ...                torch.randn(2, 8))
    >>> x0_hat.shape
    torch.Size([2, 20])
    """

    def __init__(
        self, backbone: ScGPT, gene_ids: Tensor, config: HingeConfig, *, cls_token_id: int | None = None
    ) -> None:
        super().__init__()
        bc = backbone.config
        if cls_token_id is None:
            cls_token_id = backbone.cls_token_id
        gene_ids = check_gene_ids(gene_ids, config.n_genes, 0, bc.vocab_size - 1, " (the backbone's vocabulary)")
        if not 0 <= int(cls_token_id) < bc.vocab_size:
            raise ValueError(f"cls_token_id must lie in 0..{bc.vocab_size - 1}, got {cls_token_id}")
        if config.variant not in ("hinge", "nosoftnorm"):
            raise ValueError(f"HINGE on scGPT supports the variants 'hinge' and 'nosoftnorm', not {config.variant!r}")
        self.config = config
        self.backbone_config = bc
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.register_buffer("gg", gene_ids.long().clone())
        self.register_buffer("cls_id", torch.tensor([int(cls_token_id)], dtype=torch.long))
        D, N = bc.d_model, bc.n_layers
        init, softnorm = config.modulation_init, config.variant != "nosoftnorm"
        self.cond_embed = SumCondition(config.cond_dim, config.n_genes, D, config.time_dim)
        hidden = config.modulation == "hidden"
        self.blocks = nn.ModuleList(
            ScGPTHingeBlock(layer, config.dropout * i / N, init, softnorm, hidden)
            for i, layer in enumerate(backbone.blocks)
        )
        self.final_adaln = SoftAdaLN(D, init, softnorm)
        # modulation="hidden": the expression decoder's last hidden units (ExprDecoder.features) scaled by (1 + s(c))
        self.decoder_hidden = HiddenModulation(D, D) if hidden else None
        self.std_head = StdHead(D) if config.likelihood == "gaussian" else None
        self.n_masked_layers = N // 2

    @property
    def n_genes(self) -> int:
        """Number of genes G."""
        return self.config.n_genes

    @classmethod
    def from_state(cls, backbone: ScGPT, state: dict[str, Tensor], config: HingeConfig) -> HingeScGPT:
        """A module to load ``state`` (a ``state_dict`` of this class) into: panel and ``<cls>`` id from its
        buffers ``gg`` and ``cls_id``."""
        return cls(backbone, state["gg"], config, cls_token_id=int(state["cls_id"].reshape(-1)[0]))

    @property
    def gene_ids(self) -> Tensor:
        """(G,) ids of the panel in the backbone's vocabulary."""
        return self.gg

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (the backbone's are frozen)."""
        return [p for p in self.parameters() if p.requires_grad]

    def tokens(self, x_t: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        """The backbone's input: ids (B, G+1) with ``<cls>`` first, and values (B, G+1): x_t where visible,
        scGPT's mask value where not, 0 for ``<cls>``."""
        B = x_t.shape[0]
        ids = torch.cat([self.cls_id.expand(B, 1), self.gg.expand(B, -1)], dim=1)
        values = torch.where(visible.bool(), x_t, torch.full_like(x_t, SCGPT_MASK_VALUE))
        return ids, torch.cat([values.new_zeros(B, 1), values], dim=1)

    def forward(
        self, x_t: Tensor, t: Tensor, next_visible: Tensor, visible: Tensor, cond: Tensor, *, return_std: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict x̂₀, with the arguments of :meth:`sthinge.models.Hinge.forward`: x_t, t (B,) in 1..T,
        m_{t−1}, m_t (B, G) and the histology features (B, C) -> (B, G); with ``return_std`` (``likelihood=
        "gaussian"`` only) also σ (B, G)."""
        if return_std and self.std_head is None:
            raise ValueError("return_std=True needs a model with likelihood='gaussian' (this one is 'point')")
        if x_t.dim() == 3:
            x_t = x_t.squeeze(1)
        c = self.cond_embed(t, cond, next_visible)
        ids, values = self.tokens(x_t, visible)
        h = self.backbone.embed(ids, values)
        hidden = (
            torch.cat([visible.new_ones(visible.shape[0], 1), visible], dim=1) == 0
        )  # True: hidden key (never <cls>)
        for i, block in enumerate(self.blocks):
            h = block(h, c, hidden if i < self.n_masked_layers else None)
        x = self.final_adaln(h[:, 1:], c)
        x0_hat = self._decode(x, c)
        return (x0_hat, self.std_head(x)) if return_std else x0_hat

    def _decode(self, x: Tensor, c: Tensor) -> Tensor:
        if self.decoder_hidden is None:
            return self.backbone.decode(x)
        decoder = self.backbone.decoder
        return decoder.readout(self.decoder_hidden(decoder.features(x), c))
