"""The ``sthinge`` command line: ``sthinge demo`` and ``sthinge --version``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _out(msg: str = "") -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def _summarise(sdata) -> str:
    from sthinge import _constants as K

    table = sdata.tables[K.TABLE_KEY]
    meta = table.uns.get(K.UNS_SECTIONS, {})
    lines = [f"{table.n_obs} spots x {table.n_vars} genes in {len(meta)} section(s)"]
    counts = table.obs[K.SECTION_KEY].value_counts(sort=False)
    for name, info in meta.items():
        image = info.get("image")
        shape = ""
        if image is not None:
            img = sdata.images[image]
            arr = img["scale0"].image if hasattr(img, "children") and "scale0" in img.children else img
            shape = f", image {arr.shape[-1]} x {arr.shape[-2]} px"
        lines.append(f"  {name}: {int(counts.get(name, 0))} spots, {info['mpp']:.3f} um/px{shape}")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    import sthinge as st

    start = time.perf_counter()
    st.settings.verbosity = 2 if not args.quiet else 1
    if args.synthetic:
        _out("sthinge demo: synthetic data (offline)")
        sdata = st.datasets.synthetic(n_sections=4, n_spots=144, n_genes=60, seed=args.seed)
    else:
        sections = args.sections.split(",") if args.sections else ["C2", "C3", "C4", "C5", "C6"]
        _out(f"sthinge demo: Her2ST sections {', '.join(sections)}")
        sdata = st.datasets.her2st(sections, path=args.data)
    _out(_summarise(sdata))
    if args.out is not None:
        from sthinge._utils import _atomic_path

        out = Path(args.out)
        with _atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / "summary.md").write_text("# sthinge demo\n\n```\n" + _summarise(sdata) + "\n```\n")
        _out(f"report written to {out}")
    _out(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sthinge._version import __version__

    parser = argparse.ArgumentParser(prog="sthinge", description="Spatial gene expression from H&E (HINGE).")
    parser.add_argument("--version", action="version", version=f"sthinge {__version__}")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run the end-to-end demo on Her2ST patient C (or synthetic data)")
    demo.add_argument("--synthetic", action="store_true", help="use generated data (no files or network needed)")
    demo.add_argument("--data", default=None, help="folder with the Her2ST files (default: STHINGE_DATA_DIR / cache)")
    demo.add_argument("--sections", default=None, help="comma-separated Her2ST sections (default C2..C6)")
    demo.add_argument("--out", default=None, help="report folder to write")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sthinge`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
        sys.stderr.write(f"sthinge: error: {err}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
