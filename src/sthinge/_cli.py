"""The ``sthinge`` command line: ``sthinge demo`` and ``sthinge --version``."""

from __future__ import annotations

import argparse
import sys


def _out(msg: str = "") -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def _demo_options(args: argparse.Namespace) -> dict:
    """The demo's options (the fields of :class:`sthinge._demo.DemoOptions`) from the parsed ``sthinge demo``."""
    return dict(
        synthetic=args.synthetic,
        data_path=args.data,
        out=args.out,
        overwrite=args.overwrite,
        held_out=args.held_out,
        max_epochs=args.epochs,
        n_samples=args.samples,
        n_steps=args.steps,
        seed=args.seed,
    )


def _demo(args: argparse.Namespace) -> int:
    from sthinge._demo import CLI_NAMES, check_demo_args, run_demo

    kwargs = _demo_options(args)
    check_demo_args(names=CLI_NAMES, **kwargs)  # every option, before any output or work
    import sthinge as st

    st.settings.verbosity = 1 if args.quiet else 2
    source = "synthetic data (offline)" if args.synthetic else "Her2ST patient C"
    _out(f"sthinge demo: {source}")
    result = run_demo(**kwargs, say=_out, _names=CLI_NAMES)
    _out(f"done in {result['seconds']:.1f} s; report: {result['out']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sthinge._version import __version__

    parser = argparse.ArgumentParser(prog="sthinge", description="Spatial gene expression from H&E (HINGE).")
    parser.add_argument("--version", action="version", version=f"sthinge {__version__}")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on Her2ST patient C (or synthetic data)",
        description="Run the end-to-end demo on Her2ST patient C (or synthetic data) and write a report folder. "
        "Run time on 2 idle CPU cores: about 7 minutes the first time, 3 of them pre-training the "
        "default backbone (once; it is cached), then about 4; much longer on a busy machine.",
    )
    demo.add_argument("--synthetic", action="store_true", help="use generated data (no files or network needed)")
    demo.add_argument(
        "--data",
        default=None,
        help="existing folder with the Her2ST files (default: STHINGE_DATA_DIR, the cache, or a download)",
    )
    demo.add_argument(
        "--held-out",
        default=None,
        help="section to hold out: one of C2-C6, or S1-S4 with --synthetic (default: the first)",
    )
    demo.add_argument(
        "--out",
        default="sthinge-report",
        help="report folder to write (default: sthinge-report); it must be new or empty unless "
        "--overwrite is given, and an existing file is never replaced",
    )
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier report in --out (a folder holding only report files)",
    )
    demo.add_argument("--epochs", type=int, default=30, help="maximum training epochs, >= 1 (default 30)")
    demo.add_argument("--samples", type=int, default=4, help="samples per spot, >= 1 (default 4)")
    demo.add_argument(
        "--steps", type=int, default=10, help="sampler step budget K, 1 <= K <= T=50 (default 10)"
    )  # T: HingeConfig.n_steps
    demo.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
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
    except (ValueError, TypeError, KeyError, OSError) as err:  # OSError: FileExistsError, PermissionError, ...
        sys.stderr.write(f"sthinge: error: {err}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
