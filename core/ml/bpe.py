"""A byte-level BPE tokenizer of CLIP's format, learnt from a small corpus and written to a folder.

CLIP's tokenizer (``transformers.CLIPTokenizer``) lower-cases text, splits it into words and
punctuation, maps each word's bytes to printable characters (:func:`bytes_to_unicode`), marks the
word's last symbol with ``</w>`` and applies the merges of ``merges.txt`` by rank. This module
learns those merges from a corpus the usual way (repeatedly merge the most frequent adjacent pair
of symbols, ties broken by the pair itself, so the result is deterministic), until every word of
the corpus is one token or ``max_merges`` is reached, and writes ``vocab.json``, ``merges.txt``
and ``tokenizer_config.json`` for ``CLIPTokenizer.from_pretrained(folder)``. Text outside the
corpus still tokenizes: every byte has a token of its own.

Pure Python (no torch); used for the world model's tokenizer and the tests' tiny models.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from core.atomic import Output, write_atomically

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
#: CLIP's pre-tokenisation pattern, restricted to ASCII letters/digits (enough for our corpora)
_WORD = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def words(text: str) -> list[str]:
    """CLIP's pre-tokenisation of ``text`` (lower-cased, whitespace collapsed)."""
    return _WORD.findall(" ".join(text.lower().split()))


def learn_merges(corpus: list[str], max_merges: int = 2000) -> list[tuple[str, str]]:
    """BPE merges (in rank order) learnt from the texts of ``corpus``."""
    table = bytes_to_unicode()
    freq: Counter = Counter()
    for text in corpus:
        for w in words(text):
            freq[w] += 1
    seqs: dict[tuple[str, ...], int] = {}
    for w, n in freq.items():
        syms = [table[b] for b in w.encode("utf-8")]
        syms[-1] = syms[-1] + "</w>"
        seqs[tuple(syms)] = seqs.get(tuple(syms), 0) + n
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter = Counter()
        for s, n in seqs.items():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new: dict[tuple[str, ...], int] = {}
        for s, n in seqs.items():
            out: list[str] = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + n
        seqs = new
    return merges


def write_clip_tokenizer(folder: str | Path, corpus: list[str] | None = None, max_length: int = 77, merges: list[tuple[str, str]] | None = None) -> int:
    """Write a CLIP tokenizer (learnt from ``corpus``, or with the given ``merges``) to ``folder``
    (created). Returns the vocabulary size (bytes, bytes + ``</w>``, merges, BOS, EOS: the last
    two ids are BOS and EOS)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if merges is None:
        merges = learn_merges(corpus or [])
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    config = {
        "model_max_length": int(max_length),
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "tokenizer_class": "CLIPTokenizer",
    }
    texts = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(config),
    }
    # the three files together, atomically: a failed write leaves the previous tokenizer whole
    write_atomically([Output(folder / name, _text_writer(text), "tokenizer file") for name, text in texts.items()])
    return len(vocab)


def _text_writer(text: str):
    def write(tmp: Path) -> None:
        tmp.write_bytes(text.encode("utf-8"))

    return write
