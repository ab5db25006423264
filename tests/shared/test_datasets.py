import gzip
import io
import tarfile
from pathlib import Path

import pytest

from shared.aclimdb import aclimdb_movies, ensure_aclimdb
from shared.datasets import DataError, read_reviews
from tests.conftest import IMDB_ARCHIVE


def make_aclimdb(root: Path) -> Path:
    files = {
        "aclImdb/train/pos/0_9.txt": "Great film.<br />Loved it",
        "aclImdb/train/neg/1_2.txt": "Awful.",
        "aclImdb/train/unsup/2_0.txt": "No label here",
        "aclImdb/test/pos/3_10.txt": "Superb",
        "aclImdb/test/neg/4_1.txt": "Boring",
        "aclImdb/README": "not a review",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "aclImdb"


def test_aclimdb_directory_keeps_rating_and_labels(tmp_path: Path) -> None:
    base = make_aclimdb(tmp_path)
    train = {r.id: r for r in read_reviews(base, split="train")}
    assert set(train) == {"train/pos/0_9", "train/neg/1_2"}
    assert train["train/pos/0_9"].label == 1 and train["train/pos/0_9"].rating == 9
    assert train["train/neg/1_2"].label == 0
    unsup = list(read_reviews(base, split="unsup"))
    assert [(r.label, r.rating) for r in unsup] == [(None, None)]
    # A split folder or its parent both work.
    assert {r.id for r in read_reviews(base / "test", split="test")} == {
        "test/pos/3_10",
        "test/neg/4_1",
    }


def test_aclimdb_tarball_is_read_in_place(tmp_path: Path) -> None:
    make_aclimdb(tmp_path / "src")
    archive = tmp_path / "acl.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "aclImdb", arcname="aclImdb")
    test = {r.id: (r.label, r.rating) for r in read_reviews(archive, split="test")}
    assert test == {"test/pos/3_10": (1, 10), "test/neg/4_1": (0, 1)}


def test_corrupt_tarball_names_the_file(tmp_path: Path) -> None:
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(gzip.compress(b"this is not a tar archive" * 100)[:200])
    with pytest.raises(DataError, match=r"broken\.tar\.gz"):
        list(read_reviews(archive, split="train"))


def test_not_an_aclimdb_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no aclImdb reviews"):
        list(read_reviews(tmp_path, split="train"))


def test_csv_labels_ids_and_embedded_newlines(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        'id,review,sentiment\r\na1,"Great,\nreally ""great""",positive\r\n'
        "a2,Bad,negative\r\n,Fine,1\r\n,Meh,0\r\n",
        encoding="utf-8",
    )
    rows = list(read_reviews(path))
    assert [(r.id, r.label) for r in rows] == [("a1", 1), ("a2", 0), ("r.csv:5", 1), ("r.csv:6", 0)]
    assert rows[0].text == 'Great,\nreally "great"'
    assert [r.line for r in rows] == [2, 4, 5, 6]


def test_csv_unknown_label_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("review,sentiment\ngood,positive\nhm,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"r\.csv:3: unknown label 'maybe'"):
        list(read_reviews(path))
    kept = list(read_reviews(path, errors="keep"))
    assert kept[1].error is not None and "unknown label" in kept[1].error


def test_csv_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text,label\nx,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"r\.csv:1: missing column 'review'"):
        list(read_reviews(path))
    path.write_text("review\nx\n", encoding="utf-8")
    with pytest.raises(DataError, match="sentiment"):
        list(read_reviews(path, labelled=True))


def test_csv_bad_encoding_is_a_per_row_error(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(b"review,sentiment\nok,1\nbad \xff\xfe bytes,0\n")
    rows = list(read_reviews(path, errors="keep"))
    assert rows[0].error is None and rows[1].error == "invalid UTF-8 in row"
    with pytest.raises(DataError, match=r"r\.csv:3"):
        list(read_reviews(path))


def test_jsonl_records_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'{"id": 7, "text": "Great", "label": "positive"}\n'
        b'{"review": "Bad", "sentiment": 0}\n'
        b"not json\n"
        b"[1, 2]\n"
        b'{"text": "x", "label": "??"}\n'
        b"\n"
    )
    rows = list(read_reviews(path, errors="keep"))
    assert [(r.id, r.label, r.error is None) for r in rows[:2]] == [
        ("7", 1, True),
        ("r.jsonl:2", 0, True),
    ]
    assert [r.error is not None for r in rows[2:]] == [True] * 4
    assert len(rows) == 6
    with pytest.raises(DataError, match=r"r\.jsonl:3: invalid JSON"):
        list(read_reviews(path))


def test_txt_one_review_per_line_with_bom_crlf_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst review\r\n\r\nthird \xc3\x28 bad\r\nlast")
    rows = list(read_reviews(path, errors="keep"))
    assert [r.text for r in rows[:2]] == ["First review", ""]
    assert rows[2].error is not None and "UTF-8" in rows[2].error
    assert [r.line for r in rows] == [1, 2, 3, 4] and rows[3].text == "last"
    with pytest.raises(DataError, match="labelled"):
        list(read_reviews(path, labelled=True))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (gzip.compress(b"hello"), "gzip"),
        (bytes(range(256)) * 4, "binary"),
        ("review".encode("utf-16"), "UTF-16"),
    ],
)
def test_unreadable_files_get_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        list(read_reviews(path, errors="keep"))


def test_missing_path_and_offline_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(read_reviews(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="--download"):
        ensure_aclimdb(None, tmp_path, download=False)


def test_streaming_does_not_read_everything_first(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"line\n" * 1000)
    stream = read_reviews(path)
    assert next(stream).text == "line"  # a generator: nothing else was read yet
    assert isinstance(stream, io.IOBase) is False


@pytest.mark.skipif(not IMDB_ARCHIVE.exists(), reason="../shared/data IMDB archive not present")
def test_real_imdb_archive_test_split() -> None:
    counts = {0: 0, 1: 0}
    ratings = set()
    for review in read_reviews(IMDB_ARCHIVE, split="test"):
        counts[review.label] += 1  # type: ignore[index]
        ratings.add(review.rating)
    assert counts == {0: 12500, 1: 12500}
    assert ratings == {1, 2, 3, 4, 7, 8, 9, 10}


def test_aclimdb_movies_come_from_the_url_lists(tmp_path: Path) -> None:
    base = make_aclimdb(tmp_path)
    (base / "train" / "urls_pos.txt").write_text(
        "http://www.imdb.com/title/tt0000007/usercomments\n", encoding="utf-8"
    )
    (base / "train" / "urls_neg.txt").write_text(
        "http://www.imdb.com/title/tt0000001/usercomments\n"
        "http://www.imdb.com/title/tt0000002/usercomments\n",
        encoding="utf-8",
    )
    assert aclimdb_movies(base, "train") == {
        "train/pos/0": "tt0000007",
        "train/neg/0": "tt0000001",
        "train/neg/1": "tt0000002",
    }
    assert aclimdb_movies(base, "test") == {}  # no url lists for that split: no movies


@pytest.mark.skipif(not IMDB_ARCHIVE.exists(), reason="the IMDB archive is not beside the repo")
def test_every_imdb_training_review_has_a_movie() -> None:
    movies = aclimdb_movies(IMDB_ARCHIVE, "train")
    assert len(movies) == 25_000 and len(set(movies.values())) > 3_000
