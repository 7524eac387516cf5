"""Stop strings as a token-level automaton: which tokens end a stop string such as
`"</answer>"`, from any state of the text generated so far, as one table the sampler's loop
gathers from (`aha_utils.sampler`).

`stop_table(tokenizer, strings)` builds the table, `padded_stop_table` pads it to the shape the
compiled loop takes, and `truncate_at_stop` cuts a decoded text after its first stop string.

Design decisions:
- Stop strings are text, the loop sees tokens, and one string has many tokenizations
  (`"</" "answer" ">"`, `"▁</" "answer" ">"`, a token `">\\n"`, byte tokens...). The strings
  compile into an Aho-Corasick automaton over UTF-8 bytes, lifted to tokens: a table `[Q, V]`
  giving, for each automaton state and each token, the state after that token's bytes, or -1
  when a stop string ends inside them. The loop carries one state per row and does one gather
  per step, so the check is exact for *every* tokenization the model can produce, including a
  stop string that ends in the middle of a token.
- The alternative, decoding and searching text on the host after the loop, would keep every
  row generating to `max_new_tokens` after its answer.
- Tokens share few distinct columns (bytes outside the strings' alphabet reset the automaton),
  so each distinct column is built once: about a second on a CPU for Gemma's 262,144 tokens,
  once per tokenizer and set of strings (cached).
- Stored as int16 and padded to a multiple of 16 states, so "no stop string" (a one-state
  table) and `</answer>` (10 states) run the same compiled program. With Gemma's vocabulary a
  padded table is 8 MB: the padded tables are cached too (`cached_stop_table`, and the
  no-stop-string one per vocabulary), since the caller waits for every sampler call.
"""

from __future__ import annotations

import collections
import functools
import re
from typing import Sequence

import numpy as np

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.lru_cache(maxsize=4)
def token_bytes(tokenizer) -> tuple[bytes, ...]:
    """The UTF-8 bytes each token id contributes to `tokenizer.decode` (byte-fallback pieces
    are their single byte; `▁` is a space)."""
    out = []
    for i in range(tokenizer.vocab_size):
        piece = tokenizer.id_to_piece(i)
        m = _BYTE_PIECE.fullmatch(piece)
        out.append(bytes([int(m.group(1), 16)]) if m else piece.replace("\u2581", " ").encode())
    return tuple(out)


def _aho_corasick(stops: Sequence[bytes]) -> tuple[list[dict[int, int]], list[bool]]:
    """Deterministic automaton over bytes: `delta[q][b]` (bytes absent from every stop string go
    to state 0) and `accept[q]` (some stop string ends here)."""
    goto: list[dict[int, int]] = [{}]
    accept = [False]
    for s in stops:
        q = 0
        for b in s:
            if b not in goto[q]:
                goto.append({})
                accept.append(False)
                goto[q][b] = len(goto) - 1
            q = goto[q][b]
        accept[q] = True
    alphabet = sorted(set(b"".join(stops)))
    delta: list[dict[int, int]] = [{} for _ in goto]
    fail = [0] * len(goto)
    queue = collections.deque()
    for b in alphabet:
        delta[0][b] = goto[0].get(b, 0)
        if b in goto[0]:
            queue.append(goto[0][b])
    while queue:  # breadth first, so fail[q] (shallower) is complete before q is used
        q = queue.popleft()
        accept[q] = accept[q] or accept[fail[q]]
        for b in alphabet:
            if b in goto[q]:
                r = goto[q][b]
                fail[r] = delta[fail[q]][b]
                delta[q][b] = r
                queue.append(r)
            else:
                delta[q][b] = delta[fail[q]][b]
    return delta, accept


@functools.lru_cache(maxsize=8)
def stop_table(tokenizer, stop_strings: tuple[str, ...]) -> np.ndarray:
    """int32 `[Q, V]`: automaton state after a token's bytes from each state, -1 = a stop string
    ended inside this token. Built once per tokenizer and tuple of strings (about a second)."""
    if not stop_strings or any(not isinstance(s, str) or not s for s in stop_strings):
        raise ValueError(f"stop_strings must be non-empty strings; got {stop_strings!r}")
    stops = [s.encode() for s in stop_strings]
    delta, accept = _aho_corasick(stops)
    n_states = len(delta)
    alphabet = sorted(set(b"".join(stops)))
    # Any byte outside the stop strings' alphabet resets the automaton to state 0, so a token
    # splits into a head (before its first such byte), which depends on the entry state, and
    # a tail, which does not.
    foreign = re.compile(b"[^" + b"".join(re.escape(bytes([b])) for b in alphabet) + b"]")
    contains_stop = re.compile(b"|".join(re.escape(s) for s in stops))
    memo: dict[tuple[int, bytes], int] = {}

    def run(q: int, seg: bytes) -> int:
        key = (q, seg)
        if key not in memo:
            r = q
            for b in seg:
                r = delta[r].get(b, 0)
                if accept[r]:
                    r = -1
                    break
            memo[key] = r
        return memo[key]

    # Tokens share few distinct columns: build each once, then gather them all in numpy.
    columns: dict[tuple[bytes, int | None], int] = {}
    unique: list[list[int]] = []
    which = np.empty(tokenizer.vocab_size, np.int64)
    for i, w in enumerate(token_bytes(tokenizer)):
        segs = foreign.split(w)
        head, tail = segs[0], None
        if len(segs) > 1:         # a foreign byte: the tail is entry-state independent
            # A stop string inside the head is -1 from every state anyway, so search all of w.
            tail = -1 if contains_stop.search(w) else run(0, segs[-1])
        key = (head, tail)
        if key not in columns:
            heads = [run(q, head) for q in range(n_states)]
            columns[key] = len(unique)
            unique.append(heads if tail is None else [-1 if r == -1 else tail for r in heads])
        which[i] = columns[key]
    return np.asarray(unique, np.int32).T[:, which]             # [Q, V]


STOP_STATE_BUCKET = 16  # automaton states are padded to a multiple of this: one program serves
                        # no stop string, "</answer>", or a few strings together


def padded_stop_table(table: np.ndarray | None, vocab_size: int) -> np.ndarray:
    """int16 `[16k, V]`: `table` (or the no-stop-string table) with unreachable rows added, so
    that the table's shape, and with it the compiled program, rarely changes. A table already
    padded comes back as it is: with Gemma's vocabulary one is 8 MB, and the sampler's caller
    waits for every call (`cached_stop_table`, `_no_stop_table`)."""
    if table is None:
        return _no_stop_table(vocab_size)
    table = np.asarray(table)
    if table.shape[1] != vocab_size:
        raise ValueError(f"stop table has {table.shape[1]} columns but the model has a vocabulary "
                         f"of {vocab_size}: build it with this model's tokenizer")
    if table.shape[0] > np.iinfo(np.int16).max:
        raise ValueError(f"stop strings need {table.shape[0]} automaton states; use fewer/shorter")
    if table.dtype == np.int16 and table.shape[0] % STOP_STATE_BUCKET == 0:
        return table
    rows = -(-table.shape[0] // STOP_STATE_BUCKET) * STOP_STATE_BUCKET
    out = np.zeros((rows, vocab_size), np.int16)
    out[:table.shape[0]] = table
    return out


@functools.lru_cache(maxsize=4)
def _no_stop_table(vocab_size: int) -> np.ndarray:
    """The padded one-state table (no stop string), built once per vocabulary; read-only."""
    table = np.zeros((STOP_STATE_BUCKET, vocab_size), np.int16)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=8)
def cached_stop_table(tokenizer, stop_strings: tuple[str, ...], vocab_size: int) -> np.ndarray:
    """`padded_stop_table(stop_table(...))`, padded once per tokenizer and strings; read-only."""
    table = padded_stop_table(stop_table(tokenizer, stop_strings), vocab_size)
    table.setflags(write=False)
    return table


def truncate_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` cut right after the earliest-ending stop string (unchanged if none occurs)."""
    ends = [text.find(s) + len(s) for s in stop_strings if s in text]
    return text[:min(ends)] if ends else text
