"""The expression corpus of :func:`sthinge.tl.pretrain_backbone`: tables -> a gene panel in the CellFM vocabulary,
log-normalised values (sparse), which genes each section measured, and the masked-value loss on token draws.

No Lightning here: :mod:`sthinge.tl._train` runs the training loop on what this module builds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge import _constants as K
from sthinge._logging import logg
from sthinge._utils import _check_names, _resolve_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

VAL_SEED_OFFSET = 10_007
"""Added to the seed of the validation masks, so that they differ from the training draws."""


def _tables(data: Any, table_key: str | None) -> list[AnnData]:
    if isinstance(data, list | tuple):
        if not data:
            raise ValueError("`data` is an empty list; pass at least one AnnData or SpatialData.")
        return [_resolve_table(d, table_key)[0] for d in data]
    return [_resolve_table(data, table_key)[0]]


# ----------------------------------------------------------------------------------------------------------
# gene panel and values
# ----------------------------------------------------------------------------------------------------------
def _var_to_vocab(table: AnnData, vocab: tuple[str, ...]) -> dict[str, int]:
    """``{vocabulary symbol: column of the table}`` (exact names, then CellFM's renames; exact matches win)."""
    from sthinge.pp._aliases import map_to_vocab

    names = table.var_names.astype(str).tolist()
    mapped, how = map_to_vocab(names, vocab)
    out: dict[str, int] = {}
    for i in sorted(range(len(names)), key=lambda i: (how[i] != "exact", i)):
        if mapped[i] is not None and mapped[i] not in out:
            out[mapped[i]] = i
    return out


def _choose_panel(
    tables: list[AnnData], genes: Sequence[str] | None, vocab: tuple[str, ...], maps: list[dict[str, int]]
) -> list[str]:
    """The panel as vocabulary symbols in vocabulary order (ascending CellFM id)."""
    from sthinge.pp._aliases import map_to_vocab
    from sthinge.tl._data import _panel, _panel_symbols

    if genes is None and K.GENES_KEY in tables[0].uns:
        names = _panel(tables[0], K.GENES_KEY)
        genes = _panel_symbols(tables[0], K.GENES_KEY, names)
    if genes is None:
        chosen = set().union(*(m.keys() for m in maps))
        if not chosen:
            raise ValueError("No gene of `data` is in the CellFM vocabulary; check that var_names are gene symbols.")
    else:
        genes = _check_names("genes", genes, what="gene symbols", single=False)
        mapped, _ = map_to_vocab(genes, vocab)
        outside = [g for g, m in zip(genes, mapped, strict=True) if m is None]
        if outside:
            raise ValueError(
                f"{len(outside)} gene(s) of `genes` are not in the {len(vocab)}-gene CellFM vocabulary: {outside[:10]}."
            )
        chosen = set(mapped)
    rank = {g: i for i, g in enumerate(vocab)}
    return sorted(chosen, key=rank.__getitem__)


def _is_integer(matrix) -> bool:
    from sthinge.pp._common import _values

    v = _values(matrix)
    return not np.issubdtype(v.dtype, np.floating) or bool(np.array_equal(v, np.round(v)))


def _log_values(table: AnnData, layer: str | None, index: int):
    """Log-normalised expression of all genes of ``table`` (sparse or dense) and a description of its source."""
    import scipy.sparse as sp

    from sthinge.pp._common import _check_counts, _log1p_cp10k, _values

    where = f"table {index}" if index else "the table"
    if layer is None:
        info = table.uns.get(K.UNS_NORMALIZE)
        if isinstance(info, dict) and info.get("key_added") in table.layers:
            layer = str(info["key_added"])
        else:
            if table.X is None:
                raise ValueError(f"{where} has no `X`; pass `layer=` naming a log-normalised layer.")
            if not _is_integer(table.X):
                raise ValueError(
                    f"`X` of {where} is not raw counts (it holds non-integer values) and no `pp.normalize` layer was "
                    "found: run `sthinge.pp.normalize(data)` on the raw counts, or pass `layer=` naming a layer of "
                    "log-normalised expression."
                )
            _check_counts(table.X, what=f"`X` of {where} (raw counts)")
            return _log1p_cp10k(table.X), "X (ln(1+CP10k) on the fly)"
    if layer not in table.layers:
        raise KeyError(f"`layer` {layer!r} not found in {where}; available layers: {list(table.layers)}.")
    x = table.layers[layer]
    v = _values(x)
    if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
        raise ValueError(f"`layers[{layer!r}]` of {where} holds NaN or infinite values.")
    if (v < 0).any():
        raise ValueError(f"`layers[{layer!r}]` of {where} holds negative values; expected log-normalised expression.")
    if v.size and _is_integer(x) and v.max() > 20:
        raise ValueError(
            f"`layers[{layer!r}]` of {where} looks like raw integer counts; pass `layer=None` (ln(1+CP10k) is then "
            "computed from the counts in `X`) or run `sthinge.pp.normalize(data)` first."
        )
    return (sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x)), f"layers[{layer!r}]"


def _presence(table: AnnData, cols: np.ndarray, section_key: str, presence_key: str | None, index: int):
    """Per-row group ids (n,) and group presence (n_groups, G) bool: which panel genes each section measured."""
    has = cols >= 0  # panel genes that the table has at all
    n = table.n_obs
    if presence_key is None or presence_key not in table.var or section_key not in table.obs:
        return np.zeros(n, dtype=np.int64), has[None, :], None
    listed = [set(str(s).split(",")) if isinstance(s, str) and s else set() for s in table.var[presence_key]]
    known = set().union(*listed) if listed else set()
    labels = table.obs[section_key].astype(str).to_numpy()
    sections, group = np.unique(labels, return_inverse=True)
    pres = np.zeros((len(sections), len(cols)), dtype=bool)
    for k, s in enumerate(sections):
        if s not in known:
            logg.warning(
                f"section {s!r} of table {index} appears in no `var[{presence_key!r}]` entry: all its genes "
                "are treated as measured."
            )
            pres[k] = has
            continue
        pres[k] = [c >= 0 and s in listed[c] for c in cols]
    return group.astype(np.int64), pres, sections


@dataclasses.dataclass
class _Corpus:
    """Training rows: values (n, G) CSR float32, missing genes by group, and the gene panel's CellFM ids."""

    values: Any  # scipy.sparse.csr_matrix (n, G)
    group: np.ndarray  # (n,) int64
    present: np.ndarray  # (n_groups, G) bool
    gene_ids: np.ndarray  # (G,) int64
    sources: list[str]

    @property
    def n(self) -> int:
        return self.values.shape[0]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for arr in (self.values.indptr, self.values.indices, self.values.data, self.group, self.present, self.gene_ids):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def _build_corpus(
    tables: list[AnnData],
    panel: list[str],
    maps: list[dict[str, int]],
    gene_ids: list[int],
    layer: str | None,
    section_key: str,
    presence_key: str | None,
) -> _Corpus:
    import scipy.sparse as sp

    blocks, groups, presents, sources = [], [], [], []
    offset = 0
    for i, (table, m) in enumerate(zip(tables, maps, strict=True)):
        if table.n_obs == 0:
            continue
        cols = np.array([m.get(g, -1) for g in panel], dtype=np.int64)
        x, source = _log_values(table, layer, i)
        sources.append(source)
        # (n, V_t) -> (n, G): a selection matrix puts table column cols[j] into panel column j (zeros if absent)
        j = np.flatnonzero(cols >= 0)
        select = sp.csr_matrix((np.ones(j.size, np.float32), (cols[j], j)), shape=(table.n_vars, len(panel)))
        block = sp.csr_matrix(sp.csr_matrix(x, dtype=np.float32) @ select, dtype=np.float32)
        group, present, _ = _presence(table, cols, section_key, presence_key, i)
        block = sp.csr_matrix(block.multiply(present[group]), dtype=np.float32)  # missing genes hold 0
        blocks.append(block)
        groups.append(group + offset)
        presents.append(present)
        offset += present.shape[0]
    if not blocks:
        raise ValueError("`data` has no spots or cells.")
    values = sp.vstack(blocks, format="csr")
    group = np.concatenate(groups)
    present = np.concatenate(presents, axis=0)
    values.eliminate_zeros()
    # drop rows without a measured panel gene or with zero expression over the panel (nothing to reconstruct)
    keep = (present[group].sum(1) > 0) & (np.diff(values.indptr) > 0)
    if not keep.all():
        logg.info(f"pretrain_backbone: dropping {int((~keep).sum())} spot(s) with no expression in the panel.")
    if not keep.any():
        raise ValueError("No spot or cell of `data` has expression in the gene panel.")
    return _Corpus(values[keep], group[keep], present, np.asarray(gene_ids, dtype=np.int64), sources)


# ----------------------------------------------------------------------------------------------------------
# Lightning
# ----------------------------------------------------------------------------------------------------------
def _batch_tensors(corpus: _Corpus, rows: np.ndarray):
    """Dense (B, G) values and (B, G) missing flags of ``rows``."""
    import torch

    values = torch.from_numpy(corpus.values[rows].toarray())
    missing = torch.from_numpy(~corpus.present[corpus.group[rows]])
    return values, missing


def _tokens(gene_ids, values, missing, n_tokens: int | None, generator):
    """(B, L) ids, values and pad flags: every panel gene, or ``n_tokens`` per row drawn at random (measured
    genes first)."""
    import torch

    B, G = values.shape
    if n_tokens is None or n_tokens >= G:
        return gene_ids.expand(B, G), values, missing
    noise = torch.rand(B, G, generator=generator).to(values.device)
    noise = noise.masked_fill(missing, 2.0)  # missing genes are drawn only when a row has too few measured ones
    cols = noise.argsort(dim=1)[:, :n_tokens].sort(dim=1).values  # (B, L)
    return gene_ids[cols], values.gather(1, cols), missing.gather(1, cols)


def masked_loss(model, gene_ids, values, missing, *, n_tokens, mask_ratio, generator):
    """The backbone's own pre-training objective (:meth:`pretraining_loss` of the backbone contract)."""
    ids, vals, pad = _tokens(gene_ids, values, missing, n_tokens, generator)
    return model.pretraining_loss(ids, vals, pad, mask_ratio=mask_ratio, generator=generator)


def validation_loss(model, gene_ids, batches, *, n_tokens, mask_ratio, seed) -> float:
    """Mean masked loss over ``batches`` with fixed masks (the same draws every call), weighted by rows."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = gene_ids.device
    with torch.no_grad():
        for k, (values, missing) in enumerate(batches):
            g = torch.Generator().manual_seed(seed + VAL_SEED_OFFSET + k)
            loss = masked_loss(
                model,
                gene_ids,
                values.to(device),
                missing.to(device),
                n_tokens=n_tokens,
                mask_ratio=mask_ratio,
                generator=g,
            )
            total += float(loss) * values.shape[0]
            count += values.shape[0]
    model.train(was_training)
    return total / max(count, 1)
