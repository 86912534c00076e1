"""The BPE tokenizer gives OpenAI CLIP's ids: compared with transformers' CLIPTokenizer on the same vocabulary."""

from __future__ import annotations

import html
import json
import random
import sys
from pathlib import Path

import ftfy
import pytest
import torch

from omniclip.clip import tokenize
from omniclip.clip.tokenizer import Tokenizer, clean_text, default_tokenizer

PIECES = [
    "a", "photo", "of", "the", "cat", "Dog", "RUNNING", "juggling", "surfing", "archery", "skateboarding",
    "don't", "it's", "we'll", "they're", "I'm", "you've", "he'd", "O'Neil", "rock'n'roll",
    ",", ".", "!", "?", "...", "--", "(", ")", "[x]", "{y}", "#1", "@user", "$5.99", "100%", "a/b", "c:\\d", "~", "`",
    "0", "7", "42", "2024", "3.14159", "1,000,000", "-12", "1e-5",
    "café", "naïve", "Ångström", "résumé", "Straße", "ÉCOLE", "mañana", "São", "Ελληνικά", "Привет", "שלום", "مرحبا",
    "東京", "日本語のテキスト", "中文字符", "한국어", "ไทย", "हिन्दी",
    "😀", "🎉🎉", "👍🏽", "🇫🇷", "❤️", "→", "©", "™", "°C", "½",
    "\t", "\n", "   ", "  x  ",
]  # fmt: skip
SPECIAL = [
    "",
    " ",
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "hello,world",
    "multiple     spaces\tand\nnewlines",
    "e\u0301",
    "co-operate",
    "well-known",
    "can't won't shouldn't",
    "''quoted''",
    '"double"',
    "x" * 300,
]
# Text the cleaning changes (ftfy, HTML entities): HF's tokenizer has no such cleaning, so ids are pinned here.
CLEANED = {
    "it’s": [585, 568],  # ftfy uncurls the quote: "it's"
    "&amp;": [261],  # "&"
    "&amp;amp;": [261],  # unescaped twice
    "ＡＢＣ，": [5334, 267],  # ftfy folds full-width letters: "abc,"
}


def _strings() -> list[str]:
    rng = random.Random(0)
    out = list(SPECIAL) + list(PIECES)
    for _ in range(300):
        words = rng.choices(PIECES, k=rng.randint(1, 12))
        out.append(rng.choice([" ", "", "  "]).join(words))
    return out


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    tok = default_tokenizer()
    folder = tmp_path_factory.mktemp("hf_tok")
    (folder / "vocab.json").write_text(json.dumps(tok.encoder), encoding="utf-8")
    merges = sorted(tok.ranks, key=tok.ranks.__getitem__)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return transformers.CLIPTokenizer.from_pretrained(str(folder)), folder


def _ours(text: str) -> list[int]:
    tok = default_tokenizer()
    return [tok.start_id, *tok.encode(text), tok.end_id]


def test_known_ids() -> None:
    assert tokenize("a photo of a cat")[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    tok = default_tokenizer()
    assert (tok.start_id, tok.end_id, len(tok.encoder)) == (49406, 49407, 49408)
    for text, ids in CLEANED.items():
        assert tok.encode(text) == ids, text


def test_matches_transformers(hf_tokenizer) -> None:
    hf, _ = hf_tokenizer
    strings = _strings()
    assert len(strings) > 350
    untouched = 0
    for s in strings:
        ours = _ours(s)
        assert ours == hf(clean_text(s))["input_ids"], s
        if ftfy.fix_text(s) == s and html.unescape(s) == s:
            # No cleaning beyond what HF also does (NFC, whitespace, lower case): compare on the raw text.
            assert ours == hf(s)["input_ids"], s
            untouched += 1
    assert untouched > 250


def test_cleaning_differs_where_expected(hf_tokenizer) -> None:
    hf, _ = hf_tokenizer
    for text, ids in CLEANED.items():
        assert hf(clean_text(text))["input_ids"][1:-1] == ids
        assert hf(text)["input_ids"][1:-1] != ids  # the raw text really needs the cleaning


def test_from_pretrained_dir(hf_tokenizer) -> None:
    _, folder = hf_tokenizer
    tok = Tokenizer.from_pretrained_dir(folder)
    for s in _strings()[:60]:
        assert tok.encode(s) == default_tokenizer().encode(s)
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        Tokenizer.from_pretrained_dir(folder.parent)


def test_rows_padding_and_shapes() -> None:
    one = tokenize("a photo of a cat")
    assert one.shape == (1, 77) and one.dtype == torch.long
    assert one[0, 7:].eq(0).all()
    rows = tokenize(["a", "b c d", ""], context_length=16)
    assert rows.shape == (3, 16)
    assert rows[2, :2].tolist() == [49406, 49407] and rows[2, 2:].eq(0).all()
    assert (rows.argmax(dim=-1) == torch.tensor([2, 4, 1])).all()  # the end token is the highest id


def test_overlong_raises_or_truncates() -> None:
    text = " ".join(["surfing"] * 100)
    with pytest.raises(ValueError, match=r"'surfing surfing.*\.\.\.' has 102 tokens.*context length 77.*truncate=True"):
        tokenize(text)
    cut = tokenize(text, truncate=True)
    full = _ours(text)
    assert cut[0, :76].tolist() == full[:76]
    assert cut[0, 76].item() == 49407
    exact = " ".join(["surfing"] * 75)  # 77 tokens with start and end: fits exactly
    assert tokenize(exact)[0, -1].item() == 49407


def test_decode_round_trip() -> None:
    tok = default_tokenizer()
    assert tok.decode(tok.encode("A Photo of  a CAT!")) == "a photo of a cat !"
    assert tok.decode(tok.encode("東京 café")) == "東京 café"


def test_without_ftfy_warns_and_still_tokenizes(monkeypatch, caplog) -> None:
    from omniclip.clip import tokenizer

    tokenizer._fix_text.cache_clear()
    monkeypatch.setitem(sys.modules, "ftfy", None)  # import ftfy now raises ImportError
    try:
        with caplog.at_level("WARNING", logger="omniclip.clip.tokenizer"):
            assert tokenize("a photo of a cat")[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert "ftfy is not installed" in caplog.text
        assert default_tokenizer().encode("it’s") != CLEANED["it’s"]  # the quote is no longer uncurled
    finally:
        tokenizer._fix_text.cache_clear()


def test_bad_bpe_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.txt.gz: cannot read"):
        Tokenizer.from_bpe_file(bad)
