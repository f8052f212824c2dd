"""A small, offline table of renamed human gene symbols (previous HGNC symbol -> current symbol).

sthinge has no HGNC export offline. This table covers renames that commonly separate older spatial
transcriptomics tables (Ensembl/GENCODE releases of ~2016-2019) from the CellFM vocabulary: ATP synthase
subunits, histones, adhesion GPCRs, selenoproteins, aminoacyl-tRNA synthetases, septins, MARCH ligases,
CCN factors and a few dozen frequently expressed single renames. A rename is used only when the previous
symbol is not in the vocabulary and the current one is. Users pass further mappings with ``aliases=``.
"""

from __future__ import annotations

import re

_RENAMES: dict[str, str] = {
    # CCN family, transcription / signalling
    "CTGF": "CCN2", "CYR61": "CCN1", "NOV": "CCN3", "WISP1": "CCN4", "WISP2": "CCN5", "WISP3": "CCN6",
    "KIAA0101": "PCLAF", "FAM46A": "TENT5A", "FAM46B": "TENT5B", "FAM46C": "TENT5C", "FAM46D": "TENT5D",
    "C10orf10": "DEPP1", "MLLT4": "AFDN", "AES": "TLE5", "GNB2L1": "RACK1", "HN1": "JPT1", "HN1L": "JPT2",
    "PTRF": "CAVIN1", "SDPR": "CAVIN2", "PRKCDBP": "CAVIN3", "TCEB1": "ELOC", "TCEB2": "ELOB",
    "NGFRAP1": "BEX3", "SHFM1": "SEM1", "FAM213A": "PRXL2A", "C20orf24": "RAB5IF", "ERBB2IP": "ERBIN",
    "TMEM66": "SARAF", "LINC00152": "CYTOR", "FAM129A": "NIBAN1", "FAM129B": "NIBAN2", "FAM129C": "NIBAN3",
    "ADRBK1": "GRK2", "ADRBK2": "GRK3", "DFNA5": "GSDME", "DDX58": "RIGI", "ARNTL": "BMAL1", "ARNTL2": "BMAL2",
    "CECR1": "ADA2", "COL4A3BP": "CERT1", "FAM49A": "CYRIA", "FAM49B": "CYRIB", "FAM134A": "RETREG2",
    "FAM134B": "RETREG1", "FAM134C": "RETREG3", "ACPP": "ACP3", "ACPT": "ACP4", "AIM1": "CRYBG1",
    "ASNA1": "GET3", "BRE": "BABAM2", "CASC4": "GOLM2", "CASC5": "KNL1", "CCDC109B": "MCUB", "DIEXF": "UTP25",
    "DOPEY1": "DOP1A", "DOPEY2": "DOP1B", "EPT1": "SELENOI", "FAM60A": "SINHCAF", "FAM65A": "RIPOR1",
    "FAM65B": "RIPOR2", "FGFR1OP": "CEP43", "ADSS": "ADSS2", "ADSSL1": "ADSS1", "ADCK3": "COQ8A",
    "ADCK4": "COQ8B", "APITD1": "CENPS", "CXorf21": "TASL", "C6orf48": "SNHG32", "FAM21A": "WASHC2A",
    "FAM21C": "WASHC2C", "KIAA1429": "VIRMA", "KIAA0196": "WASHC5", "KIAA1033": "WASHC4", "CCDC53": "WASHC3",
    "C11orf31": "SELENOH", "C10orf2": "TWNK", "C21orf33": "GATD3A", "C17orf89": "NDUFAF8", "C12orf10": "MYG1",
    "C14orf166": "RTRAF", "C1orf123": "CZIB", "C18orf8": "RMC1", "FAM96A": "CIAO2A", "FAM96B": "CIAO2B",
    "TMEM2": "CEMIP2", "KIAA1199": "CEMIP", "WBSCR22": "BUD23", "C7orf55": "FMC1", "LRRC16A": "CARMIL1",
    "MKL1": "MRTFA", "MKL2": "MRTFB", "SKIV2L": "SKIC2", "SKIV2L2": "MTREX", "TROVE2": "RO60", "C8orf4": "TCIM",
    "RQCD1": "CNOT9", "ZNF259": "ZPR1", "GLTSCR2": "NOP53", "CPSF3L": "INTS11", "TOMM70A": "TOMM70",
    "FAM63A": "MINDY1", "FAM175A": "ABRAXAS1", "FAM175B": "ABRAXAS2", "PVRL1": "NECTIN1", "PVRL2": "NECTIN2",
    "PVRL3": "NECTIN3", "PVRL4": "NECTIN4", "CD3EAP": "POLR1G", "TMEM5": "RXYLT1", "B3GNT1": "B4GAT1",
    "GLT25D1": "COLGALT1", "GLT25D2": "COLGALT2", "TENC1": "TNS2", "SMEK1": "PPP4R3A", "SMEK2": "PPP4R3B",
    "KIAA1524": "CIP2A", "C9orf142": "PAXX", "C19orf10": "MYDGF", "C10orf54": "VSIR", "C1orf106": "INAVA",
    "FAM19A5": "TAFA5", "FAM150A": "ALKAL1", "FAM150B": "ALKAL2", "C2orf40": "ECRG4", "LHFP": "LHFPL6",
    "ATPIF1": "ATP5IF1", "USMG5": "ATP5MK", "C14orf2": "ATP5MJ",
    # ATP synthase subunits
    "ATP5A1": "ATP5F1A", "ATP5B": "ATP5F1B", "ATP5C1": "ATP5F1C", "ATP5D": "ATP5F1D", "ATP5E": "ATP5F1E",
    "ATP5O": "ATP5PO", "ATP5H": "ATP5PD", "ATP5J": "ATP5PF", "ATP5F1": "ATP5PB", "ATP5G1": "ATP5MC1",
    "ATP5G2": "ATP5MC2", "ATP5G3": "ATP5MC3", "ATP5I": "ATP5ME", "ATP5L": "ATP5MG", "ATP5J2": "ATP5MF",
    # selenoproteins
    "SEPP1": "SELENOP", "SELM": "SELENOM", "SEPW1": "SELENOW", "SEP15": "SELENOF", "SELT": "SELENOT",
    "SELK": "SELENOK", "SELO": "SELENOO", "SELV": "SELENOV",
    # histones
    "H2AFZ": "H2AZ1", "H2AFV": "H2AZ2", "H2AFX": "H2AX", "H2AFY": "MACROH2A1", "H2AFJ": "H2AJ",
    "H3F3A": "H3-3A", "H3F3B": "H3-3B", "H1F0": "H1-0", "H1FX": "H1-10", "HIST1H4C": "H4C3",
    "HIST1H1C": "H1-2", "HIST1H1D": "H1-3", "HIST1H1E": "H1-4", "HIST1H1B": "H1-5", "HIST1H2BK": "H2BC12",
    "HIST1H2BD": "H2BC5", "HIST1H2BC": "H2BC4", "HIST1H2BG": "H2BC8", "HIST1H2BJ": "H2BC11",
    "HIST1H2AC": "H2AC6", "HIST2H2AA3": "H2AC18", "HIST2H2BE": "H2BC21", "HIST2H2AC": "H2AC20",
    "HIST3H2A": "H2AW",
    # adhesion GPCRs
    "CD97": "ADGRE5", "EMR1": "ADGRE1", "EMR2": "ADGRE2", "EMR3": "ADGRE3", "GPR56": "ADGRG1",
    "GPR64": "ADGRG2", "GPR97": "ADGRG3", "GPR114": "ADGRG5", "GPR126": "ADGRG6", "GPR128": "ADGRG7",
    "GPR116": "ADGRF5", "GPR110": "ADGRF1", "GPR111": "ADGRF2", "GPR115": "ADGRF4", "GPR124": "ADGRA2",
    "GPR125": "ADGRA3", "GPR133": "ADGRD1", "GPR98": "ADGRV1", "LPHN1": "ADGRL1", "LPHN2": "ADGRL2",
    "LPHN3": "ADGRL3", "ELTD1": "ADGRL4", "BAI1": "ADGRB1", "BAI2": "ADGRB2", "BAI3": "ADGRB3",
}  # fmt: skip

# families renamed by a rule: SEPTn -> SEPTINn, MARCHn -> MARCHFn, cytosolic aminoacyl-tRNA synthetases XARS -> XARS1
_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^SEPT(\d+)$"), r"SEPTIN\1"),
    (re.compile(r"^MARCH(\d+)$"), r"MARCHF\1"),
    (re.compile(r"^([ACDGHIKLMNQRSTVWY]ARS|EPRS)$"), r"\g<1>1"),
)


def builtin_rename(symbol: str) -> str | None:
    """Return the current symbol for a previous one known to sthinge, or ``None``."""
    if symbol in _RENAMES:
        return _RENAMES[symbol]
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
