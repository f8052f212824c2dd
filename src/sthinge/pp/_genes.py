"""``pp.select_genes``: the HMHVG gene panel (high mean AND high variance) restricted to the CellFM vocabulary."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._utils import _check_int, _check_names, _check_no_repeats
from sthinge.pp._common import (
    _check_counts,
    _check_key,
    _get_matrix,
    _log1p_cp10k,
    _section_labels,
    _section_order,
    _table_for,
    _values,
)

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

_VOCABS = {"cellfm-80m": 27855, "cellfm-800m": 24078, 27855: 27855, 24078: 24078}


def _resolve_vocab(vocab) -> tuple[tuple[str, ...] | None, str]:
    """Return ``(symbols or None, description)``."""
    from sthinge._vocab import cellfm_vocab

    if vocab is None:
        return None, "none"
    if isinstance(vocab, os.PathLike) or (isinstance(vocab, str) and vocab not in _VOCABS and os.path.exists(vocab)):
        return _scgpt_vocab(Path(vocab))
    if hasattr(vocab, "vocabulary") and hasattr(vocab, "gene_ids"):  # a backbone module (the backbone contract)
        symbols = tuple(g for g in vocab.vocabulary() if not (g.startswith("<") and g.endswith(">")))
        return symbols, f"{vocab.kind} backbone {vocab.config.name!r} ({len(symbols)} genes)"
    if isinstance(vocab, str | int) and not isinstance(vocab, bool):
        if vocab not in _VOCABS:
            raise ValueError(
                "`vocab` must be 'cellfm-80m', 'cellfm-800m', an scGPT checkpoint folder (or its vocab.json), a "
                f"backbone, a list of gene symbols or None, got {vocab!r}."
            )
        size = _VOCABS[vocab]
        return cellfm_vocab(size), ("cellfm-80m" if size == 27855 else "cellfm-800m")
    if isinstance(vocab, Sequence | np.ndarray | set | frozenset) and not isinstance(vocab, str):
        symbols = tuple(dict.fromkeys(str(v) for v in vocab))
        if not symbols:
            raise ValueError("`vocab` is an empty list of symbols.")
        return symbols, f"user ({len(symbols)} symbols)"
    raise TypeError(f"`vocab` must be a string, a list of gene symbols or None, got {type(vocab).__name__}.")


def _scgpt_vocab(path: Path) -> tuple[tuple[str, ...], str]:
    """The gene tokens of an scGPT checkpoint folder's ``vocab.json`` (or of that file), special tokens left out."""
    from sthinge.io._scgpt import VOCAB_FILE, _read_vocab

    file = path / VOCAB_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"`vocab` {str(path)!r}: no scGPT vocabulary ({VOCAB_FILE}) there.")
    tokens = _read_vocab(file)
    symbols = tuple(g for g in sorted(tokens, key=tokens.__getitem__) if not (g.startswith("<") and g.endswith(">")))
    return symbols, f"scgpt ({file.parent.name if path.is_dir() else file.name}, {len(symbols)} genes)"


def _presence(table: AnnData, matrix, labels: np.ndarray, sections: list[str]) -> tuple[np.ndarray, str]:
    """(n_sections, n_genes) bool: is the gene measured in the section? See :func:`select_genes`."""
    import scipy.sparse as sp

    if K.VAR_SECTIONS in table.var:
        listed = [set(str(x).split(",")) if isinstance(x, str) else set() for x in table.var[K.VAR_SECTIONS]]
        all_listed = set().union(*listed) if listed else set()
        if all(s in all_listed for s in sections):
            return np.array([[s in lst for lst in listed] for s in sections], dtype=bool), f"var[{K.VAR_SECTIONS!r}]"
    out = np.zeros((len(sections), table.n_vars), dtype=bool)
    for i, s in enumerate(sections):
        rows = np.flatnonzero(labels == s)
        block = matrix[rows]
        if sp.issparse(block):
            out[i] = np.asarray((block != 0).sum(axis=0)).ravel() > 0
        else:
            out[i] = (np.asarray(block) != 0).any(axis=0)
    return out, "nonzero counts"


def _mean_var(matrix) -> tuple[np.ndarray, np.ndarray]:
    import scipy.sparse as sp

    n = matrix.shape[0]
    if sp.issparse(matrix):
        m = sp.csr_matrix(matrix, dtype=np.float64)
        mean = np.asarray(m.sum(axis=0)).ravel() / n
        sq = np.asarray(m.multiply(m).sum(axis=0)).ravel() / n
    else:
        m = np.asarray(matrix, dtype=np.float64)
        mean = m.mean(axis=0)
        sq = (m * m).mean(axis=0)
    return mean, np.maximum(sq - mean * mean, 0.0)


def _expressed(matrix) -> np.ndarray:
    """Per column: does any row hold a nonzero value?"""
    import scipy.sparse as sp

    if sp.issparse(matrix):
        return np.asarray(abs(sp.csr_matrix(matrix)).max(axis=0).toarray()).ravel() > 0
    return (np.asarray(matrix) != 0).any(axis=0)


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest values; ties broken by position (deterministic)."""
    order = np.argsort(-values, kind="stable")
    return order[:n]


@_doc
def select_genes(
    data: AnnData | SpatialData,
    *,
    train_sections: Sequence[str] | None = None,
    n_top: int = 300,
    vocab: str | os.PathLike | Sequence[str] | None = "cellfm-80m",
    genes: Sequence[str] | None = None,
    layer: str | None = None,
    section_key: str = K.SECTION_KEY,
    gene_symbols: str | None = None,
    aliases: Mapping[str, str] | None = None,
    table_key: str | None = None,
    key_added: str = K.GENES_KEY,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Select the gene panel: HMHVG genes of the training sections within the CellFM vocabulary.

    The panel follows HINGE/Stem: among genes that are in the vocabulary and measured in **every** training
    section, keep those ranked in the top ``n_top`` by mean **and** in the top ``n_top`` by variance of the
    log-normalised expression, pooled over the spots of the training sections only (so no information from
    held-out sections leaks into the panel).

    A gene is *measured* in a section if it is listed in ``var["sections"]`` (written by the sthinge dataset
    loaders, where a section's file lists the gene) or, for tables without that column, if it has a nonzero
    count in at least one spot of the section. A gene without any expression on the training spots is never
    selected (nothing could be learned about it), and naming one in ``genes`` is an error.

    Symbols are mapped to the vocabulary by: exact match; the user's ``aliases``; a small built-in table of
    renamed symbols (e.g. ``KIAA0101`` → ``PCLAF``, ``ATP5B`` → ``ATP5F1B``, ``SEPT7`` → ``SEPTIN7``,
    ``QARS`` → ``QARS1``; a few hundred renames, not a full HGNC history); a unique case-insensitive match.
    Genes that map to a vocabulary symbol already taken by another gene are dropped (exact matches win).

    Parameters
    ----------
    data
        AnnData or SpatialData (its table).
    train_sections
        Sections (values of ``obs[section_key]``) used to rank genes; ``None`` uses all sections.
    n_top
        Size of the mean and variance rankings whose intersection is the panel (so the panel has at most
        ``n_top`` genes).
    vocab
        ``"cellfm-80m"`` (27,855 genes, default), ``"cellfm-800m"`` (24,078), an scGPT checkpoint folder (or its
        ``vocab.json``: its gene tokens, special tokens left out), a backbone module (its vocabulary), a list of
        allowed symbols, or ``None`` for no restriction. Genes outside it are reported the same way for each.
    genes
        An explicit panel (var names, or symbols of ``var[gene_symbols]``) instead of the HMHVG ranking;
        genes outside the vocabulary are dropped with a warning.
    layer
        Layer with log-normalised expression. ``None``: the layer written by :func:`sthinge.pp.normalize` if
        present, else ln(1 + CP10k) of the raw counts in ``X`` computed on the fly.
    %(section_key)s
        A table without the column is one section.
    gene_symbols
        var column holding gene symbols, when ``var_names`` are e.g. Ensembl ids.
    aliases
        Extra ``{previous symbol: vocabulary symbol}`` mappings, tried before the built-in renames.
    %(table_key)s
    key_added
        Key of the var column and the uns entry written.
    %(copy)s

    Returns
    -------
    ``None``; with ``copy=True`` the modified copy of ``data`` (a SpatialData for a SpatialData). Writes, into the
    table:

    - ``var[key_added]``: bool, whether the gene is in the panel;
    - ``var[f"{key_added}_symbol"]``: the vocabulary symbol each gene maps to (``""`` where none);
    - ``uns[key_added]["genes"]``: the panel as a list of **var names**, in CellFM vocabulary order (= ascending
      CellFM gene id) when a CellFM vocabulary is used, else in the table's var order;
    - ``uns[key_added]["params"]``: the parameters, the vocabulary symbols of the panel in the same order
      (``"symbols"``), the renames used (``"renamed"``) and the numbers of genes dropped at each step
      (``"n_not_in_vocab"``, ``"n_duplicate"``, ``"n_absent"``, ``"n_zero"`` (no expression on the training
      spots), ``"n_not_top"``).

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.synthetic(n_sections=3, n_spots=36, n_genes=40)
    >>> st.pp.select_genes(sdata, train_sections=["S1", "S2"], n_top=20)
    >>> panel = sdata.tables["table"].uns["sthinge_genes"]["genes"]
    """
    n_top = _check_int("n_top", n_top, low=1)
    key_added = _check_key("key_added", key_added)
    gene_symbols = _check_key("gene_symbols", gene_symbols, optional=True)
    if aliases is not None and not isinstance(aliases, Mapping):
        raise TypeError(f"`aliases` must be a dict {{previous symbol: symbol}} or None, got {type(aliases).__name__}.")
    vocab_symbols, vocab_name = _resolve_vocab(vocab)
    source, table, copied = _table_for(data, table_key, copy)
    if source.n_obs == 0 or source.n_vars == 0:
        what = "spots (the table has 0 rows)" if source.n_obs == 0 else "genes (the table has 0 columns)"
        raise ValueError(f"`data` has no {what}; cannot select a gene panel.")
    if not source.var_names.is_unique:
        dup = list(dict.fromkeys(source.var_names[source.var_names.duplicated()].astype(str)))
        raise ValueError(
            f"The table's `var_names` are not unique (e.g. {dup[:5]}): a panel of names would be ambiguous. Sum or "
            "drop the duplicates, or call `.var_names_make_unique()` first."
        )

    labels = _section_labels(source, section_key)
    all_sections = _section_order(labels)
    if train_sections is None:
        train = all_sections
    else:
        hint = "; give at least one section, or None for all"
        train = _check_names("train_sections", train_sections, what="section names", single=False, hint=hint)
        _check_no_repeats("train_sections", train)
        unknown = [s for s in train if s not in all_sections]
        if unknown:
            raise ValueError(f"`train_sections` {unknown} not found in obs[{section_key!r}]; sections: {all_sections}.")

    # symbols
    if gene_symbols is not None:
        if gene_symbols not in source.var:
            raise KeyError(f"`gene_symbols` {gene_symbols!r} is not a var column; columns: {list(source.var.columns)}.")
        symbols = source.var[gene_symbols].astype(str).to_numpy()
    else:
        symbols = source.var_names.astype(str).to_numpy()
        if len(symbols) and np.mean([s.startswith(("ENSG", "ENSMUSG")) for s in symbols]) > 0.5:
            logg.warning("`var_names` look like Ensembl ids; pass `gene_symbols=` naming the var column of symbols.")

    # expression used for ranking (training rows only)
    train_rows = np.flatnonzero(np.isin(labels, train))
    norm = source.uns.get(K.UNS_NORMALIZE, {})
    if layer is None and isinstance(norm, Mapping) and norm.get("key_added") in source.layers:
        layer_used = norm["key_added"]
        expr = source.layers[layer_used][train_rows]
    elif layer is not None:
        layer_used = layer
        expr = _get_matrix(source, layer)[train_rows]
    else:
        layer_used = "X (ln(1+CP10k) on the fly)"
        expr = None
    if expr is None:
        counts = _get_matrix(source, None)[train_rows]
        _check_counts(counts, what="`X` (raw counts)")
        expr = _log1p_cp10k(counts)
    else:
        v = _values(expr)
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ValueError(f"`layers[{layer_used!r}]` holds NaN or infinite values.")
    expressed = _expressed(expr)  # genes with no expression on the training spots cannot be learned

    # 1. vocabulary
    n_input = source.n_vars
    if vocab_symbols is None:
        mapped, how = list(symbols), ["exact"] * n_input
    else:
        from sthinge.pp._aliases import map_to_vocab

        mapped, how = map_to_vocab(symbols, vocab_symbols, dict(aliases) if aliases else None)
    in_vocab = np.array([m is not None for m in mapped])
    n_not_in_vocab = int((~in_vocab).sum())
    # a vocabulary symbol claimed twice: keep the exact match (else the first gene)
    taken: dict[str, int] = {}
    duplicate = np.zeros(n_input, dtype=bool)
    for i in sorted(np.flatnonzero(in_vocab), key=lambda i: (how[i] != "exact", i)):
        if mapped[i] in taken:
            duplicate[i] = True
        else:
            taken[mapped[i]] = i
    ok = in_vocab & ~duplicate
    renamed = {str(symbols[i]): mapped[i] for i in np.flatnonzero(ok) if how[i] in ("alias", "renamed", "case")}

    if genes is not None:
        hint = "; give the genes of the panel, or None to select them"
        genes = _check_names("genes", genes, what="gene names", single=False, hint=hint)
        names = source.var_names.astype(str).to_numpy()
        pos = {g: i for i, g in enumerate(names)}
        pos_sym = {g: i for i, g in enumerate(symbols)}
        idx, missing = [], []
        for g in dict.fromkeys(str(g) for g in genes):
            i = pos.get(g, pos_sym.get(g))
            (missing.append(g) if i is None else idx.append(i))
        if missing:
            raise KeyError(f"{len(missing)} gene(s) of `genes` not in the table: {missing[:10]}.")
        idx = np.array(idx, dtype=int)
        dropped = [str(symbols[i]) for i in idx if not ok[i]]
        if dropped:
            logg.warning(f"{len(dropped)} gene(s) of `genes` are not in the {vocab_name} vocabulary: {dropped[:10]}.")
        chosen = idx[ok[idx]]
        zero = [str(source.var_names[i]) for i in chosen if not expressed[i]]
        if zero:
            raise ValueError(
                f"{len(zero)} gene(s) of `genes` have no expression on any training spot (`train_sections`), so "
                f"they cannot be learned: {zero[:10]}. Leave them out of `genes`."
            )
        n_absent = n_not_top = 0
        n_not_in_vocab, n_dup, n_zero = len(dropped), 0, 0
        presence_rule = "explicit genes"
    else:
        # 2. measured in every training section
        full = source.X if source.X is not None else source.layers[layer_used]
        presence, presence_rule = _presence(source, full, labels, train)
        everywhere = presence.all(axis=0)
        n_zero = int((ok & everywhere & ~expressed).sum())
        if n_zero:
            logg.info(f"select_genes: {n_zero} gene(s) with no expression on the training spots are excluded.")
        cand = np.flatnonzero(ok & everywhere & expressed)
        n_absent = int((ok & ~everywhere).sum())
        n_dup = int(duplicate.sum())
        if cand.size == 0:
            raise ValueError(
                f"No gene is in the {vocab_name} vocabulary, measured in every training section {train} and "
                "expressed on their spots."
            )
        # 3. HMHVG: top n by mean AND top n by variance
        mean, var = _mean_var(expr[:, cand])
        if cand.size <= n_top:
            logg.warning(f"Only {cand.size} candidate genes for `n_top`={n_top}: the panel keeps all of them.")
        top = np.intersect1d(_top(mean, n_top), _top(var, n_top))
        chosen = cand[top]
        n_not_top = int(cand.size - chosen.size)
    if chosen.size == 0:
        raise ValueError("The gene panel is empty; check `genes`, `vocab` and `train_sections`.")

    # order: CellFM vocabulary order (ascending id) for a CellFM vocabulary, else var order
    if vocab_symbols is not None and vocab_name.startswith("cellfm"):
        rank = {g: i for i, g in enumerate(vocab_symbols)}
        chosen = np.array(sorted(chosen.tolist(), key=lambda i: rank[mapped[i]]), dtype=int)
    else:
        chosen = np.sort(chosen)

    # write (nothing was written before this point)
    flag = np.zeros(n_input, dtype=bool)
    flag[chosen] = True
    table.var[key_added] = flag
    table.var[f"{key_added}_symbol"] = [m if (m is not None and ok[i]) else "" for i, m in enumerate(mapped)]
    params = {
        "method": "explicit" if genes is not None else "hmhvg",
        "n_top": n_top,
        "vocab": vocab_name,
        "train_sections": list(train),
        "section_key": section_key,
        "layer": layer_used,
        "presence": presence_rule,
        "symbols": [str(mapped[i]) for i in chosen],
        "renamed": renamed,
        "n_input": int(n_input),
        "n_not_in_vocab": int(n_not_in_vocab),
        "n_duplicate": int(n_dup),
        "n_absent": int(n_absent),
        "n_zero": int(n_zero),
        "n_not_top": int(n_not_top),
        "n_genes": int(chosen.size),
    }
    table.uns[key_added] = {"genes": [str(table.var_names[i]) for i in chosen], "params": params}
    old = table.uns.get(f"{key_added}_params")  # an older sthinge kept the parameters beside the panel
    if isinstance(old, Mapping) and {"symbols", "n_genes"} <= set(old):
        del table.uns[f"{key_added}_params"]
    logg.info(
        f"select_genes: {chosen.size} genes in the panel from {n_input}: dropped {n_not_in_vocab} not in the "
        f"{vocab_name} vocabulary ({len(renamed)} renamed to fit), {n_dup} duplicate, {n_absent} absent from some "
        f"training section, {n_zero} without expression on the training spots, {n_not_top} not in the top {n_top} "
        "by both mean and variance."
    )
    return copied
