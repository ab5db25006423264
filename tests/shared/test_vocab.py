import json
from pathlib import Path

import pytest

from shared.vocab import OOV_ID, PAD_ID, Vocabulary, VocabularyError

DOCS = [["good", "film"], ["bad", "film"], ["good", "good", "acting"]]


def test_build_orders_by_frequency_then_alphabet_and_reserves_pad_oov() -> None:
    vocab = Vocabulary.build(DOCS, size=10)
    assert vocab.tokens == ["<pad>", "<oov>", "good", "film", "acting", "bad"]
    assert vocab.id_of("<pad>") == PAD_ID and vocab.id_of("unknown") == OOV_ID


def test_size_caps_the_vocabulary() -> None:
    assert len(Vocabulary.build(DOCS, size=4)) == 4


def test_encode_counts_oov_and_never_emits_pad() -> None:
    vocab = Vocabulary.build(DOCS, size=10)
    enc = vocab.encode(["good", "zzz", "film", "yyy"])
    assert enc.ids == [2, OOV_ID, 3, OOV_ID]
    assert enc.oov_count == 2 and not enc.truncated and enc.n_tokens == 4


def test_truncation_keeps_head_and_tail() -> None:
    vocab = Vocabulary.build([[str(i) for i in range(100)]], size=200)
    tokens = [str(i) for i in range(100)]
    enc = vocab.encode(tokens, max_len=8, head_fraction=0.25)
    assert enc.tokens == ["0", "1", "94", "95", "96", "97", "98", "99"]
    assert enc.truncated and enc.n_tokens == 100 and len(enc.ids) == 8
    assert vocab.encode(tokens, max_len=8, head_fraction=1.0).tokens == [str(i) for i in range(8)]


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(DOCS, size=10)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.fingerprint == vocab.fingerprint


def test_load_rejects_tampered_tokens(tmp_path: Path) -> None:
    vocab = Vocabulary.build(DOCS, size=10)
    data = vocab.to_json()
    data["tokens"] = [*vocab.tokens[:-1], "evil"]  # type: ignore[index]
    (tmp_path / "v.json").write_text(json.dumps(data))
    with pytest.raises(VocabularyError, match="fingerprint"):
        Vocabulary.load(tmp_path / "v.json")


def test_load_rejects_other_preprocessing_version(tmp_path: Path) -> None:
    data = Vocabulary.build(DOCS, size=10).to_json()
    data["preprocessing"] = {"version": 999}
    (tmp_path / "v.json").write_text(json.dumps(data))
    with pytest.raises(VocabularyError, match="preprocessing"):
        Vocabulary.load(tmp_path / "v.json")


def test_load_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "v.json").write_bytes(b"\x00\x01 not json")
    with pytest.raises(VocabularyError, match="cannot read"):
        Vocabulary.load(tmp_path / "v.json")
    with pytest.raises(VocabularyError):
        Vocabulary(["a", "b"])
