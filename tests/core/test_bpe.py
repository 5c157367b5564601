"""The locally learnt CLIP tokenizer: every corpus word is one token, other text still encodes."""

from __future__ import annotations

import pytest

from core.ml.bpe import learn_merges, words, write_clip_tokenizer


def test_merges_make_every_corpus_word_one_symbol():
    corpus = ["a red box on a floor", "a blue ball, a red box"]
    merges = learn_merges(corpus)
    assert len(merges) == len(set(merges))
    assert words("A red  box, ok!") == ["a", "red", "box", ",", "ok", "!"]
    # apply the merges by rank, as CLIP's tokenizer does
    rank = {m: i for i, m in enumerate(merges)}
    for w in {x for t in corpus for x in words(t)}:
        syms = list(w[:-1]) + [w[-1] + "</w>"]
        while len(syms) > 1:
            pairs = [(rank.get((a, b), 1e9), i) for i, (a, b) in enumerate(zip(syms, syms[1:]))]
            r, i = min(pairs)
            if r == 1e9:
                break
            syms[i : i + 2] = [syms[i] + syms[i + 1]]
        assert syms == [w + "</w>"]


def test_clip_tokenizer_loads_the_written_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    corpus = ["a red checkered box and a blue beach ball on a tiled floor in front of a wall"]
    n = write_clip_tokenizer(tmp_path, corpus, max_length=24)
    tok = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    ids = tok(corpus[0]).input_ids
    assert ids[0] == n - 2 and ids[-1] == n - 1  # BOS, EOS are the last two ids
    assert len(ids) == 2 + len(corpus[0].split())  # one token a word
    assert tok.convert_ids_to_tokens(ids[1:3]) == ["a</w>", "red</w>"]
    odd = tok("Zebra? 42").input_ids  # outside the corpus: bytes
    assert len(odd) > 4 and all(0 <= i < n for i in odd)
    assert len(tok([""], padding="max_length", max_length=tok.model_max_length).input_ids[0]) == 24


def test_the_three_files_are_written_together_or_not_at_all(tmp_path):
    """Issue 8: every file the program writes goes through core.atomic. A tokenizer whose third file
    cannot be written leaves the previous vocab.json and merges.txt as they were, no temporary."""
    from core.errors import InputError

    write_clip_tokenizer(tmp_path, ["a red box"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "tokenizer_config.json").mkdir()  # cannot be replaced by a file
    with pytest.raises(InputError, match="tokenizer_config.json"):
        write_clip_tokenizer(tmp_path, ["a blue ball on a tiled floor"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == {k: v for k, v in before.items() if k != "tokenizer_config.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
