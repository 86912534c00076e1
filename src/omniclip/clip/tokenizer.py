"""CLIP's byte-level BPE tokenizer: text to the token ids OpenAI's CLIP was trained on.

Follows OpenAI CLIP's ``clip/simple_tokenizer.py`` (Radford et al. 2021, Sec. 2.4): ftfy + HTML clean-up, whitespace
collapse, lower case, a word regex, byte-to-unicode mapping and BPE merges from ``bpe_simple_vocab_16e6.txt.gz``
(shipped in ``omniclip/assets``). Rows are ``[start, tokens..., end, 0, 0, ...]``.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import logging
import unicodedata
from collections.abc import Callable
from pathlib import Path

import regex
import torch

from omniclip.assets import ASSETS

log = logging.getLogger(__name__)

DEFAULT_BPE = ASSETS / "bpe_simple_vocab_16e6.txt.gz"
START, END = "<|startoftext|>", "<|endoftext|>"
NUM_MERGES = 49152 - 256 - 2  # OpenAI keeps this many merge lines of the 16e6 file: vocabulary 49408
_CACHE_LIMIT = 200_000  # BPE results kept per tokenizer before the cache starts over

_WORDS = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_SPACES = regex.compile(r"\s+")


@functools.lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Map each byte to a printable unicode character (GPT-2's reversible byte encoding)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]  # the other bytes map to 256, 257, ... in byte order
    return {b: chr(c) for b, c in zip([*keep, *moved], [*keep, *range(256, 256 + len(moved))], strict=True)}


@functools.lru_cache(maxsize=1)
def _fix_text() -> Callable[[str], str]:
    """``ftfy.fix_text``; without ftfy (a bare GPU box), NFC only, with one warning: ids may then differ."""
    try:
        import ftfy
    except ImportError:
        log.warning(
            "ftfy is not installed: text is only NFC-normalised, so token ids can differ from OpenAI's on "
            "mojibake, curly quotes or full-width letters; pip install ftfy"
        )
        return lambda text: unicodedata.normalize("NFC", text)
    return ftfy.fix_text


def clean_text(text: str) -> str:
    """OpenAI's cleaning: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(_fix_text()(text))).strip()
    return _SPACES.sub(" ", text).strip().lower()


def _read_merges(lines: list[str], path: Path) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(lines, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}: line {number} is not a BPE merge 'a b': {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class Tokenizer:
    """Byte-level BPE with CLIP's vocabulary; ``encode`` gives ids without the start and end tokens.

    Args:
        encoder: token string -> id, including ``<|startoftext|>`` and ``<|endoftext|>``.
        merges: BPE merges in priority order.
    """

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]]) -> None:
        for special in (START, END):
            if special not in encoder:
                raise ValueError(f"vocabulary lacks the special token {special!r}")
        self.encoder = encoder
        self.decoder = {i: s for s, i in encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.start_id, self.end_id = encoder[START], encoder[END]
        self._cache: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_bpe_file(cls, path: str | Path = DEFAULT_BPE) -> Tokenizer:
        """Build OpenAI's vocabulary from a gzipped merges file such as ``bpe_simple_vocab_16e6.txt.gz``."""
        path = Path(path)
        try:
            lines = gzip.open(path).read().decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot read a gzipped BPE merges file ({err})") from err
        merges = _read_merges(lines[1 : NUM_MERGES + 1], path)  # line 0 is the version header
        chars = list(bytes_to_unicode().values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [START, END]
        return cls({s: i for i, s in enumerate(vocab)}, merges)

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> Tokenizer:
        """Read a Hugging Face tokenizer folder holding ``vocab.json`` and ``merges.txt``."""
        path = Path(path)
        vocab_file, merges_file = path / "vocab.json", path / "merges.txt"
        for f in (vocab_file, merges_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found; a CLIP tokenizer folder needs vocab.json and merges.txt")
        try:
            encoder = json.loads(vocab_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{vocab_file}: not valid JSON ({err})") from err
        lines = merges_file.read_text(encoding="utf-8").split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        return cls({str(k): int(v) for k, v in encoder.items()}, _read_merges([x for x in lines if x.strip()], path))

    def bpe(self, word: str) -> tuple[str, ...]:
        """Split one byte-encoded word into BPE symbols; the last symbol carries ``</w>``."""
        if (cached := self._cache.get(word)) is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:], strict=False)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = out = tuple(parts)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` after OpenAI's cleaning, without start and end tokens."""
        ids: list[int] = []
        for word in _WORDS.findall(clean_text(text)):
            if word in (START, END):
                ids.append(self.encoder[word])
                continue
            encoded = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(encoded))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of token ids with start and end ids dropped (strip zero padding first: id 0 is ``!``)."""
        skip = {self.start_id, self.end_id}
        text = "".join(self.decoder[i] for i in ids if i not in skip and i in self.decoder)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def __call__(self, texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
        """Token rows ``(len(texts), context_length)``: start, ids, end, zero padding (OpenAI's ``clip.tokenize``).

        Args:
            texts: one string or a list of strings.
            context_length: tokens per row, start and end included.
            truncate: cut overlong texts to ``context_length`` tokens ending with the end token; otherwise raise.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (start and end tokens), got {context_length}")
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > context_length:
                if not truncate:
                    short = text if len(text) <= 60 else text[:57] + "..."
                    raise ValueError(
                        f"text {short!r} has {len(ids)} tokens (start and end included), more than the context "
                        f"length {context_length}; shorten it or pass truncate=True"
                    )
                ids = ids[:context_length]
                ids[-1] = self.end_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> Tokenizer:
    """OpenAI's tokenizer from the shipped ``bpe_simple_vocab_16e6.txt.gz`` (built once per process)."""
    return Tokenizer.from_bpe_file(DEFAULT_BPE)


def tokenize(texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """Token ids as OpenAI's ``clip.tokenize``: a ``(len(texts), context_length)`` LongTensor.

    Args:
        texts: one string (gives one row) or a list of strings.
        context_length: tokens per row, start and end included (77 for every released CLIP).
        truncate: keep the first ``context_length - 1`` tokens and end with the end token instead of raising.
    """
    return default_tokenizer()(texts, context_length=context_length, truncate=truncate)
