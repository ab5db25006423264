"""``sentiment-teacher-pack``: the data a GPU teacher trains on, in one file it can carry.

    sentiment-teacher-pack --out teacher-pack.npz          # IMDB train + unsup + test
    python worker/training/teacher_gpu.py --pack teacher-pack.npz --out soft-labels.npz
    sentiment-train --soft-labels soft-labels.npz          # distil on the CPU

Token ids of every review (our tokenizer, a vocabulary built on the fitting and unlabelled
reviews), each review's role (fit, holdout = ``sentiment-train``'s validation split for
``--seed``, unsup, test for reporting only), labels and text keys; see
``worker.training.teacher``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from shared.aclimdb import ensure_aclimdb
from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError, detect_format
from shared.log import configure_logging
from worker.training.config import DEFAULT_VAL_FRACTION
from worker.training.teacher import DEFAULT_PACK_LEN, DEFAULT_PACK_VOCAB, MAX_VOCAB
from worker.training.teacher_pack import build_pack


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_or_exit("sentiment-teacher-pack")
    p = command_parser("sentiment-teacher-pack", __doc__, epilog=True)
    p.add_argument("--data", type=Path, help="the aclImdb archive or directory (default IMDB)")
    p.add_argument("--out", type=Path, required=True, help="the pack to write (.npz)")
    p.add_argument("--seed", type=int, default=1, help="the validation split's seed (default 1)")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_PACK_VOCAB,
        help=f"the teacher's vocabulary, at most {MAX_VOCAB} (default %(default)s)",
    )
    p.add_argument("--max-len", type=int, default=DEFAULT_PACK_LEN, help="tokens kept of a review")
    p.add_argument("--limit", type=int, help="at most this many reviews of each split (tests)")
    p.add_argument("--no-test", action="store_true", help="leave the test split out")
    p.add_argument("--download", action="store_true", help="fetch IMDB from Stanford if missing")
    args = p.parse_args(argv)
    configure_logging(settings.log_level, settings.log_format)
    try:
        data = ensure_aclimdb(args.data, settings.data_dir, args.download)
        if not detect_format(data).startswith("aclimdb"):
            raise DataError(data, "the teacher pack is made from the aclImdb archive or directory")
        meta = build_pack(
            data,
            args.out,
            seed=args.seed,
            val_fraction=DEFAULT_VAL_FRACTION,
            vocab_size=args.vocab_size,
            max_len=args.max_len,
            limit=args.limit,
            with_test=not args.no_test,
        )
    except (DataError, ValueError) as exc:
        print(f"sentiment-teacher-pack: {exc}", file=sys.stderr)
        return 2
    size = args.out.stat().st_size / (1 << 20)
    print(f"wrote {args.out} ({size:.1f} MiB): {meta['reviews']}, {meta['tokens']} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
