"""A GGUF file's header, read without its tensor data: the metadata (key -> value) and each tensor's
name, shape and type, plus how many bytes the tensor data needs (a shorter file is truncated).

Why not `gguf.GGUFReader`: it turns every entry of the tokenizer's arrays (50k-250k strings) into a
numpy view, ~5 s per model on a busy 2-core machine; `models list` reads dozens of headers and must
take under a second. This reader walks the same layout (the gguf package's types and block sizes)
and skips long arrays without building them.
"""

from __future__ import annotations

import importlib.util
import mmap
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEEP_ARRAY_ITEMS = 64  # longer arrays (the vocabulary, merges) are skipped: only their length is kept
_ALIGNMENT = 32  # GGUF's default; general.alignment overrides it


def gguf_constants() -> Any:
    """The gguf package's `constants` module (magic number, value and tensor types, block sizes, file
    types) without `import gguf`, whose __init__ loads numpy and its reader and writer: 0.4 s of the
    1 s `models list` may take. constants.py imports only enum and typing."""
    global _CONSTANTS
    if _CONSTANTS is None:
        if "gguf.constants" in sys.modules:
            _CONSTANTS = sys.modules["gguf.constants"]
        else:
            spec = importlib.util.find_spec("gguf")  # locates the package without running it
            if spec is None or spec.origin is None:
                raise BadGGUF("the gguf package is not installed (pip install gguf)")
            path = Path(spec.origin).parent / "constants.py"
            loaded = importlib.util.spec_from_file_location("vault_agent.models.gguf_constants", path)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
            _CONSTANTS = module
    return _CONSTANTS


_CONSTANTS: Any = None


class BadGGUF(ValueError):
    """Not a GGUF file, or one cut short / damaged: the message says which, in a few words."""


@dataclass(frozen=True)
class SkippedArray:
    """An array left unread because it is long (e.g. tokenizer.ggml.tokens): its length only."""

    length: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: int  # gguf.GGMLQuantizationType
    offset: int  # from the start of the data section

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def nbytes(self) -> int:
        c = gguf_constants()
        block, size = c.GGML_QUANT_SIZES[c.GGMLQuantizationType(self.type)]
        return self.elements // block * size


@dataclass
class GGUFHeader:
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_end: int = 0  # the file must be at least this long to hold every tensor

    @property
    def parameters(self) -> int:
        return sum(t.elements for t in self.tensors)


def read_header(path: Path) -> GGUFHeader:
    """The header of one GGUF file (one part of a split model). BadGGUF when it is not one or is cut short."""
    magic = gguf_constants().GGUF_MAGIC
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise BadGGUF("not a GGUF file (too short)" if size else "an empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if struct.unpack_from("<I", buf, 0)[0] != magic:
                raise BadGGUF("not a GGUF file (no GGUF magic number)")
            try:
                return _parse(buf, size)
            except (struct.error, IndexError, UnicodeDecodeError, OverflowError, MemoryError):
                raise BadGGUF("truncated or damaged GGUF header") from None


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        end = self.pos + n
        if end > len(self.buf):
            raise IndexError("string past the end")
        text = self.buf[self.pos:end].decode("utf-8")
        self.pos = end
        return text

    def skip_strings(self, count: int) -> None:
        unpack, buf, pos = struct.unpack_from, self.buf, self.pos
        for _ in range(count):
            pos += 8 + unpack("<Q", buf, pos)[0]
        if pos > len(buf):
            raise IndexError("array past the end")
        self.pos = pos


# GGUFValueType -> struct format of a scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _value(cur: _Cursor, kind: int) -> Any:
    if kind in _SCALARS:
        return cur.take(_SCALARS[kind])
    if kind == _STRING:
        return cur.string()
    if kind == _ARRAY:
        item, count = cur.take("<I"), cur.take("<Q")
        if count > KEEP_ARRAY_ITEMS:
            if item == _STRING:
                cur.skip_strings(count)
            elif item in _SCALARS:
                cur.pos += count * struct.calcsize(_SCALARS[item])
            else:  # arrays of arrays: walk them
                for _ in range(count):
                    _value(cur, item)
            return SkippedArray(count)
        return [_value(cur, item) for _ in range(count)]
    raise BadGGUF(f"damaged GGUF header (unknown value type {kind})")


def _parse(buf: mmap.mmap, size: int) -> GGUFHeader:
    cur = _Cursor(buf)
    cur.pos = 4
    version = cur.take("<I")
    if version not in (2, 3):
        raise BadGGUF(f"GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
    if n_tensors > size or n_kv > size:  # counts no file of this size could hold
        raise BadGGUF("damaged GGUF header (impossible counts)")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = _value(cur, cur.take("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = tuple(cur.take("<Q") for _ in range(cur.take("<I")))
        tensors.append(TensorInfo(name, dims, cur.take("<I"), cur.take("<Q")))
    align = int(metadata.get("general.alignment", _ALIGNMENT) or _ALIGNMENT)
    data_start = -(-cur.pos // align) * align
    try:
        data_end = data_start + max((t.offset + t.nbytes() for t in tensors), default=0)
    except (KeyError, ValueError):
        raise BadGGUF("damaged GGUF header (unknown tensor type)") from None
    return GGUFHeader(metadata, tensors, data_end)


def quantization_name(metadata: dict[str, Any], header: GGUFHeader) -> str | None:
    c = gguf_constants()
    GGMLQuantizationType, LlamaFileType = c.GGMLQuantizationType, c.LlamaFileType
    file_type = metadata.get("general.file_type")
    if isinstance(file_type, int):
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    kinds = [t.type for t in header.tensors if len(t.shape) >= 2]  # the weights, not the norms
    if not kinds:
        return None
    try:
        return GGMLQuantizationType(max(set(kinds), key=kinds.count)).name
    except ValueError:
        return None
