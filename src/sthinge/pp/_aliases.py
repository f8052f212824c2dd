"""A small, offline table of renamed human gene symbols (previous HGNC symbol -> current symbol).

sthinge has no HGNC export offline. This table covers renames that commonly separate older spatial
transcriptomics tables (Ensembl/GENCODE releases of ~2016-2019) from the CellFM vocabulary: ATP synthase
subunits, histones, adhesion GPCRs, selenoproteins, aminoacyl-tRNA synthetases, septins, MARCH ligases,
CCN factors and a few dozen frequently expressed single renames. A rename is used only when the previous
symbol is not in the vocabulary and the current one is. Users pass further mappings with ``aliases=``.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_RENAMES_FILE = "gene_renames.tsv"  # in sthinge.data: one "previous<TAB>current" pair a line


@functools.cache
def _renames() -> dict[str, str]:
    text = resources.files("sthinge.data").joinpath(_RENAMES_FILE).read_text(encoding="utf-8")
    pairs = (line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {old.strip(): new.strip() for old, new in pairs}


# families renamed by a rule: SEPTn -> SEPTINn, MARCHn -> MARCHFn, cytosolic aminoacyl-tRNA synthetases XARS -> XARS1
_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^SEPT(\d+)$"), r"SEPTIN\1"),
    (re.compile(r"^MARCH(\d+)$"), r"MARCHF\1"),
    (re.compile(r"^([ACDGHIKLMNQRSTVWY]ARS|EPRS)$"), r"\g<1>1"),
)


def builtin_rename(symbol: str) -> str | None:
    """Return the current symbol for a previous one known to sthinge, or ``None``."""
    renames = _renames()
    if symbol in renames:
        return renames[symbol]
    for pattern, repl in _RULES:
        if pattern.match(symbol):
            return pattern.sub(repl, symbol)
    return None


def map_to_vocab(symbols, vocab, aliases: dict[str, str] | None = None) -> tuple[list[str | None], list[str]]:
    """Map ``symbols`` to members of ``vocab``.

    Order of attempts: exact match; the user's ``aliases``; the built-in renames; a case-insensitive match
    (unique in the vocabulary). Returns ``(mapped, how)`` with ``mapped[i]`` the vocabulary symbol or ``None``
    and ``how[i]`` one of ``"exact", "alias", "renamed", "case", ""``.
    """
    vocab_set = set(vocab)
    upper: dict[str, str | None] = {}
    for v in vocab:
        upper[v.upper()] = None if v.upper() in upper else v  # None marks an ambiguous case-folded symbol
    aliases = aliases or {}
    mapped: list[str | None] = []
    how: list[str] = []
    for s in symbols:
        s = str(s)
        if s in vocab_set:
            mapped.append(s), how.append("exact")
            continue
        target = aliases.get(s)
        if target is not None and target in vocab_set:
            mapped.append(target), how.append("alias")
            continue
        target = builtin_rename(s)
        if target is not None and target in vocab_set:
            mapped.append(target), how.append("renamed")
            continue
        target = upper.get(s.strip().upper())
        if target is not None:
            mapped.append(target), how.append("case")
            continue
        mapped.append(None), how.append("")
    return mapped, how
