"""The IMDB dataset (Maas et al. 2011) as a whole: where its archive is, downloaded on request
(``ensure_aclimdb``), and which movie each labelled review is about (``aclimdb_movies``).

Its reviews are read like any other file's, by ``shared.datasets.read_reviews``.
"""

from __future__ import annotations

import re
import tarfile
import urllib.request
from pathlib import Path
from typing import IO

from shared.datasets import DataError
from shared.progress import progress

ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ACLIMDB_ARCHIVE = "aclImdb_v1.tar.gz"
_ACL_URLS = re.compile(r"(?:^|/)(train|test)/urls_(pos|neg)\.txt$")
_IMDB_TITLE = re.compile(r"/title/(tt\d+)/")


def aclimdb_movies(path: Path, split: str) -> dict[str, str]:
    """Review id -> IMDb title id (``tt0443632``) of a labelled aclImdb split, from the
    dataset's ``urls_pos.txt`` / ``urls_neg.txt`` (line ``n`` is review ``n``'s movie page).

    Empty when the files are missing (a hand-made folder in the aclImdb layout).  Reviews of one
    movie share its plot, cast and words, so a validation split that keeps whole movies apart
    scores like the test split, whose movies are all unseen.
    """
    urls: dict[str, list[str]] = {}

    def take(name: str, raw: bytes) -> None:
        match = _ACL_URLS.search(name)
        if match and match.group(1) == split:
            urls[match.group(2)] = raw.decode("utf-8", "replace").splitlines()

    try:
        if path.is_dir():
            for file in path.resolve().rglob("urls_*.txt"):
                take(file.as_posix(), file.read_bytes())
        else:
            with tarfile.open(path, mode="r|gz") as archive:
                for member in archive:
                    if member.isfile() and _ACL_URLS.search(member.name):
                        fh = archive.extractfile(member)
                        if fh is not None:
                            take(member.name, fh.read())
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(path, f"cannot read archive: {exc}") from exc
    movies = {}
    for polarity, lines in urls.items():
        for number, url in enumerate(lines):
            match = _IMDB_TITLE.search(url)
            if match:
                movies[f"{split}/{polarity}/{number}"] = match.group(1)
    return movies


def ensure_aclimdb(path: Path | None, data_dir: Path, download: bool = False) -> Path:
    """Return a readable aclImdb path: ``path``, or the archive in ``data_dir``, or download it.

    Offline (or with ``download=False``) a missing dataset raises DataError saying what to do.
    """
    if path is not None:
        if path.exists():
            return path
        if not download:
            raise DataError(path, "no such file or directory (pass --download to fetch IMDB)")
    target = path or data_dir / ACLIMDB_ARCHIVE
    if target.exists():
        return target
    if not download:
        raise DataError(target, "dataset not found; pass --download or a path to aclImdb")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        # A constant https URL (B310 is about user-supplied schemes such as file:).
        with urllib.request.urlopen(ACLIMDB_URL, timeout=30) as response, partial.open("wb") as out:  # nosec B310
            _copy_with_progress(response, out, int(response.headers.get("Content-Length") or 0))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(
            ACLIMDB_URL, f"download failed ({exc}); offline? put {ACLIMDB_ARCHIVE} in {data_dir}"
        ) from exc
    partial.replace(target)
    return target


def _copy_with_progress(src: IO[bytes], dst: IO[bytes], total: int) -> None:
    with progress(total=total or None, unit="B", unit_scale=True, desc="download") as bar:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
            bar.update(len(chunk))
