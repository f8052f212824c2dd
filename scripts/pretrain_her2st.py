"""Pre-train sthinge's default CellFM-architecture backbone on Her2ST without patient C.

The real CellFM weights are a gated download; this script builds a stand-in of the same architecture and
checkpoint format by CellFM's masked value modelling on the 29 expression-only Her2ST sections of patients
A, B, D-H (patient C, whose sections carry the H&E images, is held out for evaluation). Settings:
``sthinge.tl._backbone.HER2ST_RECIPE``; see docs/pretraining.md.

Usage::

    STHINGE_DATA_DIR=../shared/data python scripts/pretrain_her2st.py --out her2st-cpu-small.pt
    python scripts/pretrain_her2st.py                      # into the cache, where `sthinge demo` looks
    python scripts/pretrain_her2st.py --epochs 4 --preset tiny --threads 2
"""

from __future__ import annotations

import argparse
import time

from sthinge.tl._backbone import HER2ST_RECIPE, default_backbone_path, pretrain_her2st


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="checkpoint path (default: the cache used by `sthinge demo`)")
    parser.add_argument("--epochs", type=int, default=HER2ST_RECIPE["max_epochs"], help="training epochs")
    parser.add_argument("--preset", default=HER2ST_RECIPE["preset"], help="backbone size (e.g. cpu-small, tiny)")
    parser.add_argument(
        "--n-tokens",
        type=int,
        default=HER2ST_RECIPE["n_tokens"],
        help="panel genes per spot and step (0: the whole panel)",
    )
    parser.add_argument("--seed", type=int, default=HER2ST_RECIPE["seed"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--data", default=None, help="Her2ST folder (default: $STHINGE_DATA_DIR/her2st or the cache)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    save = args.out
    if save is None and (args.epochs, args.preset, args.n_tokens, args.seed) == (
        HER2ST_RECIPE["max_epochs"],
        HER2ST_RECIPE["preset"],
        HER2ST_RECIPE["n_tokens"],
        HER2ST_RECIPE["seed"],
    ):
        save = default_backbone_path()  # the file `sthinge demo` reuses
    net = pretrain_her2st(
        save=save,
        preset=args.preset,
        max_epochs=args.epochs,
        n_tokens=args.n_tokens or None,
        seed=args.seed,
        path=args.data,
    )
    info, path = net.sthinge_pretrain, net.sthinge_path
    total = time.perf_counter() - start

    print(
        f"backbone {info['config']['name']}: {info['config']['n_layers']} layers x {info['config']['d_model']}, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters"
    )
    print(f"data: {info['n_spots']} spots ({info['n_train']} train / {info['n_val']} val) x {len(info['genes'])} genes")
    print(f"{'epoch':>5} {'train loss':>11} {'val loss':>9} {'lr':>9}")
    print(f"{'init':>5} {'':>11} {info['initial_val_loss']:9.4f}")
    for h in info["history"]:
        print(
            f"{int(h['epoch']):5d} {h.get('train_loss', float('nan')):11.4f} {h.get('val_loss', float('nan')):9.4f} "
            f"{h['lr']:9.2e}"
        )
    print(
        f"pre-training {info['runtime_s']:.0f} s, total with data loading {total:.0f} s "
        f"({torch.get_num_threads()} threads)"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
