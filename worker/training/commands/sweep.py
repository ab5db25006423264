"""``sentiment-sweep``: hyper-parameter sweeps on the validation split, resumable.

    sentiment-sweep --preset keras-blog                 # the Keras blog's 36-run grid
    sentiment-sweep --arch kim_ngram --grid filters=32,64 --grid embed_dim=32,48
    sentiment-sweep --preset kim-ngram --sample 4       # a random 4 of the preset's grid
    sentiment-sweep --preset served                     # what the unlabelled reviews bring

Writes ``results.csv`` (one line per finished run, kept if the sweep is killed: the same command
resumes), ``results.md`` (best first) and ``results.png`` into ``--out``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.aclimdb import ACLIMDB_ARCHIVE, ensure_aclimdb
from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError
from shared.log import configure_logging
from worker.training.sweep import PRESETS, parse_grid, sweep


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from worker.model.cnn import ARCHITECTURES

    p = command_parser("sentiment-sweep", __doc__, epilog=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", choices=sorted(PRESETS), help="a ready-made grid")
    what.add_argument("--arch", choices=ARCHITECTURES, help="sweep one of our architectures")
    p.add_argument("--grid", action="append", default=[], help="key=v1,v2 (repeatable)")
    p.add_argument("--set", action="append", default=[], help="key=value fixed for every run")
    p.add_argument("--sample", type=int, help="a seeded random sample of N configurations")
    p.add_argument("--max-runs", type=int, help="stop after N new runs (resume later)")
    p.add_argument("--data", type=Path, help=f"training data (default $DATA_DIR/{ACLIMDB_ARCHIVE})")
    p.add_argument("--limit", type=int, help="use at most N training reviews")
    p.add_argument(
        "--seed", type=int, default=1, help="seed for the split and the runs (default: 1)"
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of train scored (default: 0.1)"
    )
    p.add_argument("--out", type=Path, help="results folder (default sweeps/<preset or arch>)")
    args = p.parse_args(argv)
    settings = settings_or_exit("sentiment-sweep")
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.preset:
            preset = PRESETS[args.preset]
            family, grid, fixed = preset["family"], dict(preset["grid"]), dict(preset["fixed"])
        else:
            family, grid, fixed = args.arch, {}, {}
        grid.update(parse_grid(args.grid))
        fixed.update((k, v[0]) for k, v in parse_grid(args.set))
        if not grid:
            p.error("nothing to sweep: give --preset or at least one --grid")
        data = ensure_aclimdb(args.data, settings.data_dir, False)
        out = args.out or Path("sweeps") / (args.preset or args.arch)
        rows = sweep(
            family,
            grid,
            fixed,
            data,
            out,
            limit=args.limit,
            sample=args.sample,
            max_runs=args.max_runs,
            seed=args.seed,
            val_fraction=args.val_fraction,
        )
    except (DataError, ValueError) as exc:
        print(f"sentiment-sweep: {exc}", file=sys.stderr)
        return 2
    best = rows[0] if rows else None
    print(
        f"{len(rows)} runs in {out}/results.md"
        + (
            f"; best {best['params']} val accuracy {float(best['val_accuracy']):.4f}"
            if best
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
