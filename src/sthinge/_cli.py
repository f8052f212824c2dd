"""The ``sthinge`` command line: ``sthinge demo``, ``sthinge predict``, ``sthinge fit`` and ``sthinge --version``."""

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


def _predict(args: argparse.Namespace) -> int:
    import sthinge as st

    st.settings.verbosity = 1 if args.quiet else 2
    summary = st.tl.predict_cohort(
        args.manifest,
        args.model,
        args.out,
        spacing_um=args.spacing_um,
        spot_diameter_um=args.spot_diameter_um,
        tissue_only=not args.whole_image,
        encoder=args.encoder,
        weights=args.weights,
        force_encoder=args.force_encoder,
        n_steps=args.steps,
        n_samples=args.samples,
        levels=args.levels if args.levels else None,
        batch_size=args.batch_size,
        embed_batch_size=args.embed_batch_size,
        num_workers=args.num_workers,
        device=args.device,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    counts = summary["status"].value_counts().to_dict()
    _out(
        f"sthinge predict: {len(summary)} slide(s): "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"; summary: {args.out}/summary.csv"
    )
    return 0 if counts.get("failed", 0) == 0 else 3


def _fit(args: argparse.Namespace) -> int:
    import sthinge as st
    from sthinge._fit_config import read_config, run_fit_config

    read_config(args.config)  # every check of the file before any work
    st.settings.verbosity = 1 if args.quiet else 2
    run_fit_config(args.config, args.out, resume=args.resume, overwrite=args.overwrite, say=_out)
    return 0


def _add_fit(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="train a model from a TOML config file (no notebook needed)",
        description="Train a HINGE model from a TOML config: [data] (zarr stores, HEST samples or Her2ST sections), "
        "[panel] (pp.select_genes), [embedding] (pp.embed_histology), [backbone] (name, weights) and [fit] (any "
        "other keyword of tl.fit). Writes the model, history.csv and a copy of the config to --out; Lightning's "
        "checkpoints go to --out/checkpoints, from which --resume continues an interrupted run.",
    )
    p.add_argument("config", help="the TOML config file")
    p.add_argument("--out", required=True, help="folder to write the model to (new or empty unless --overwrite)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from --out/checkpoints")
    p.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out, starting afresh over its checkpoints"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_fit)


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict expression on a cohort of H&E slides with a trained model",
        description="Predict expression on every slide of a manifest with a trained model: pseudo-spots over the "
        "tissue, the slide embedded as the model's training embeddings were, one SpatialData zarr per slide in --out "
        "and a summary.csv updated as slides finish. A rerun skips finished slides and retries failed ones. Several "
        "processes share the slides under torchrun or SLURM (torchrun --nproc-per-node=N -m sthinge predict ...). "
        "Exit status 0 when every slide succeeded, 3 when some failed (see the summary), 2 on bad input.",
    )
    p.add_argument("model", help="folder of a model saved by HingeModel.save (or its model.pt)")
    p.add_argument(
        "manifest",
        help="CSV with a 'path' column (slide files, relative to the CSV) and optional 'mpp' and 'sample_id' columns",
    )
    p.add_argument("--out", required=True, help="results folder (one <sample_id>.zarr per slide, summary.csv)")
    p.add_argument("--spacing-um", type=float, default=100.0, help="distance between pseudo-spots in µm (default 100)")
    p.add_argument("--spot-diameter-um", type=float, default=None, help="pseudo-spot diameter in µm (default: spacing)")
    p.add_argument("--whole-image", action="store_true", help="cover the whole image, not only the tissue")
    p.add_argument("--encoder", default=None, help="histology encoder (default: the one the model was trained with)")
    p.add_argument("--weights", default=None, help="encoder weights file (default: the recorded one, sha256-checked)")
    p.add_argument(
        "--force-encoder",
        action="store_true",
        help="embed with --encoder / --weights even if they differ from the model's",
    )
    p.add_argument("--steps", type=int, default=None, help="sampler step budget K (default: the model's T)")
    p.add_argument("--samples", type=int, default=1, help="samples per spot, >= 1 (default 1)")
    p.add_argument(
        "--levels",
        type=float,
        nargs="*",
        default=[0.5, 0.9],
        help="interval levels to write (default 0.5 0.9; none: no intervals)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="rows per model call (default: automatic)")
    p.add_argument("--embed-batch-size", type=int, default=64, help="tiles per encoder batch (default 64)")
    p.add_argument("--num-workers", type=int, default=0, help="threads reading tiles ahead (default 0)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: sthinge's settings)")
    p.add_argument("--seed", type=int, default=0, help="random seed of every slide's prediction (default 0)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder holding another model's results (redone) or other files",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_predict)


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
    _add_predict(sub)
    _add_fit(sub)
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
