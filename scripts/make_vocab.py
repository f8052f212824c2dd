"""Rebuild the symbol-only CellFM vocabularies shipped in ``src/sthinge/data`` from CellFM's CSV files.

Usage: ``python scripts/make_vocab.py ../shared/data/cellfm``
"""

import csv
import gzip
import sys
from pathlib import Path

FILES = {"gene_info.csv": 27855, "gene_info_24078.csv": 24078}


def main(src: str) -> None:
    out_dir = Path(__file__).resolve().parents[1] / "src" / "sthinge" / "data"
    for name, size in FILES.items():
        with open(Path(src) / name, newline="") as f:
            rows = csv.reader(f)
            next(rows)  # header: HGNC_gene, ...
            symbols = [row[0] for row in rows]  # file order = CellFM id order; never re-sort
        if len(symbols) != size or len(set(symbols)) != size:
            raise SystemExit(f"{name}: expected {size} unique symbols, found {len(symbols)}")
        data = ("\n".join(symbols) + "\n").encode()
        (out_dir / f"cellfm_vocab_{size}.txt.gz").write_bytes(gzip.compress(data, mtime=0))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cellfm")
