"""The CellFM gene vocabularies shipped with sthinge (symbol-only, file order = CellFM id order).

Gene id = 1 + position in the list; id 0 is padding (see Method, :ref:`method-backbone`). The lists are derived from
CellFM's ``expand_gene_info.csv`` (27,855 genes, 80M weights) and ``gene_info.csv`` (24,078 genes, 800M
weights); ``scripts/make_vocab.py`` rebuilds them.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

VOCAB_SIZES = (27855, 24078)
_ALIASES = {
    "cellfm-80m": 27855,
    "cellfm-800m": 24078,
    "27855": 27855,
    "24078": 24078,
    "expand_gene_info": 27855,
    "gene_info": 24078,
}


def _vocab_size(name: int | str) -> int:
    if isinstance(name, bool):
        raise TypeError(f"`vocab` must be an int or str, got {name!r}.")
    if isinstance(name, int):
        size = name
    elif isinstance(name, str):
        if name not in _ALIASES:
            raise ValueError(
                f"Unknown CellFM vocabulary {name!r}; expected one of {sorted(_ALIASES)} or {VOCAB_SIZES}."
            )
        size = _ALIASES[name]
    else:
        raise TypeError(f"`vocab` must be an int or str, got {type(name).__name__}.")
    if size not in VOCAB_SIZES:
        raise ValueError(f"Unknown CellFM vocabulary size {size}; expected one of {VOCAB_SIZES}.")
    return size


@lru_cache(maxsize=4)
def cellfm_vocab(name: int | str = 27855) -> tuple[str, ...]:
    """Return the CellFM gene symbols in vocabulary order.

    Parameters
    ----------
    name
        ``27855`` / ``"cellfm-80m"`` (default, the list the 80M weights and the official HINGE code use) or
        ``24078`` / ``"cellfm-800m"`` (the list of the 800M weights).

    Returns
    -------
    Gene symbols; the CellFM id of ``symbols[i]`` is ``i + 1``.
    """
    size = _vocab_size(name)
    data = resources.files("sthinge.data").joinpath(f"cellfm_vocab_{size}.txt.gz").read_bytes()
    symbols = tuple(gzip.decompress(data).decode().split())
    if len(symbols) != size:  # pragma: no cover - guards a corrupted install
        raise RuntimeError(f"CellFM vocabulary file for {size} genes holds {len(symbols)} symbols.")
    return symbols


def cellfm_gene_ids(genes, name: int | str = 27855) -> list[int]:
    """Map gene symbols to CellFM ids (1-based); raises ``KeyError`` naming genes not in the vocabulary."""
    index = {g: i + 1 for i, g in enumerate(cellfm_vocab(name))}
    missing = [g for g in genes if g not in index]
    if missing:
        raise KeyError(f"{len(missing)} gene(s) not in the {_vocab_size(name)}-gene CellFM vocabulary: {missing[:5]}")
    return [index[g] for g in genes]
