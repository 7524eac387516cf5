"""The stop-string automaton (`aha_utils.stop_strings`): on a toy vocabulary with overlapping
strings and on Gemma's with `</answer>` spelled many ways, the table stops exactly where a
brute-force search of the decoded bytes finds a stop string; token bytes decode as the
tokenizer does; texts are cut after the first stop string; the padded table's shapes."""

from __future__ import annotations

import numpy as np
import pytest

from aha_utils.stop_strings import (STOP_STATE_BUCKET, cached_stop_table, padded_stop_table,
                                    stop_table, token_bytes, truncate_at_stop)


class ToyTokenizer:
    """Enough of the Tokenizer interface for `stop_table`: pieces, and a byte token."""
    pieces = ["a", "b", "ab", "ba", "c", "bc", "x", "<0x61>", "abc", "cab"]
    vocab_size = len(pieces)

    def id_to_piece(self, i):
        return self.pieces[i]


def automaton_stop(table, seq):
    """Index of the token at which the table says a stop string ended, or None."""
    state = 0
    for k, t in enumerate(seq):
        state = table[state, t]
        if state < 0:
            return k
    return None


def brute_force_stop(tb, seq, stops):
    for k in range(len(seq)):
        text = b"".join(tb[t] for t in seq[:k + 1])
        if any(s.encode() in text for s in stops):
            return k
    return None


def test_stop_table_overlapping_strings_on_a_toy_vocabulary():
    tok = ToyTokenizer()
    stops = ("abab", "bcb", "ca")
    table = stop_table(tok, stops)
    tb = token_bytes(tok)
    assert tb[7] == b"a"
    rng = np.random.default_rng(0)
    for _ in range(3000):
        seq = rng.integers(0, tok.vocab_size, rng.integers(1, 9)).tolist()
        assert automaton_stop(table, seq) == brute_force_stop(tb, seq, stops), seq


def test_stop_table_answer_tag_on_the_gemma_vocabulary(tokenizer):
    stops = ("</answer>",)
    table = stop_table(tokenizer, stops)
    tb = token_bytes(tokenizer)
    by_text = {}
    for i, b in enumerate(tb):
        by_text.setdefault(b, i)
    # Spell "x</answer>y" many ways: cut it at random points, each chunk one token when the
    # vocabulary has it (else its encoding); sometimes drop a chunk or slip a token in.
    rng = np.random.default_rng(1)
    found = 0
    for _ in range(3000):
        text = rng.choice(["", " ", "\n", "3 ", "<answer>"]) + "</answer>" + rng.choice(
            ["", ">", "\n", ".", " </"])
        cuts = sorted(set(rng.integers(1, len(text), rng.integers(0, 5)).tolist()))
        chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        seq = []
        for c in chunks:
            seq += [by_text[c.encode()]] if c.encode() in by_text else tokenizer.encode(
                c, add_bos=False)
        if rng.random() < 0.3:
            k = int(rng.integers(0, len(seq)))
            seq = seq[:k] + seq[k + 1:] if rng.random() < 0.5 else (
                seq[:k] + [int(rng.integers(0, 262144))] + seq[k:])
        want = brute_force_stop(tb, seq, stops)
        found += want is not None
        assert automaton_stop(table, seq) == want, [tokenizer.id_to_piece(t) for t in seq]
    assert 1500 < found < 3000
    assert automaton_stop(table, tokenizer.encode("<answer> 3 </ans", add_bos=False)) is None


def test_token_bytes_concatenate_to_decode(tokenizer):
    ids = np.random.default_rng(2).integers(500, 262144, 3000).tolist()
    assert b"".join(token_bytes(tokenizer)[i] for i in ids).decode() == tokenizer.decode(ids)


def test_truncate_at_stop():
    assert truncate_at_stop("a </answer> b </answer>", ["</answer>"]) == "a </answer>"
    assert truncate_at_stop("xyz", ["</answer>"]) == "xyz"
    assert truncate_at_stop("ab cd", ["cd", "b"]) == "ab"


def test_padded_table_shapes_and_errors():
    """One compiled shape for no stop string and for a few: states padded to a multiple of 16,
    unreachable rows added, an already padded table returned as it is, a wrong vocabulary an
    error."""
    tok = ToyTokenizer()
    table = stop_table(tok, ("abab", "bcb", "ca"))
    padded = padded_stop_table(table, tok.vocab_size)
    assert padded.dtype == np.int16 and padded.shape[0] % STOP_STATE_BUCKET == 0
    np.testing.assert_array_equal(padded[:len(table)], table)
    assert (padded[len(table):] == 0).all()
    assert padded_stop_table(padded, tok.vocab_size) is padded
    none = padded_stop_table(None, tok.vocab_size)
    assert none.shape == (STOP_STATE_BUCKET, tok.vocab_size) and not none.any()
    cached = cached_stop_table(tok, ("abab", "bcb", "ca"), tok.vocab_size)
    np.testing.assert_array_equal(cached, padded)
    assert cached is cached_stop_table(tok, ("abab", "bcb", "ca"), tok.vocab_size)
    with pytest.raises(ValueError, match="vocabulary"):
        padded_stop_table(table, tok.vocab_size + 1)
    with pytest.raises(ValueError, match="non-empty"):
        stop_table(tok, ("",))
