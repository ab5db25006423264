"""What the benchmarks share beyond ``shared.local`` (the process launcher): their options."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.config import Settings


def model_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The dataset and model-version options every benchmark takes."""
    parser.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    parser.add_argument("--model-dir", type=Path, default=settings.model_dir)
    parser.add_argument("--model-name", default=settings.model_name)
    parser.add_argument("--version", default="LATEST")
