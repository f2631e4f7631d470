"""Canonical weights to and from files, never trusting the file.

`.npz` is read with `allow_pickle=False` (an object array is refused, and nothing it carries is
executed); `.safetensors` is parsed here (an 8-byte little-endian header length, a JSON header,
raw little-endian tensors), so no framework is needed to read it. Names are the canonical ones
of `AttentionWeights` (`query_kernel`, ..., `output_bias`).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from attnconf.atomicio import write_bytes_atomic
from attnconf.contract import AttentionWeights

Array = np.ndarray[Any, Any]

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}
_MAX_HEADER = 100 * 1024 * 1024


class WeightFileError(ValueError):
    """A weight file is missing, corrupt, unsafe or not canonical."""


def load_weights(path: str | os.PathLike[str]) -> AttentionWeights:
    """Load canonical weights from `.npz` or `.safetensors`; raise `WeightFileError`."""
    p = Path(path)
    if not p.is_file():
        raise WeightFileError(f"Weight file {str(p)!r} does not exist or is not a file.")
    if p.suffix == ".npz":
        arrays = _read_npz(p)
    elif p.suffix == ".safetensors":
        arrays = _read_safetensors(p)
    else:
        raise WeightFileError(f"Weight file {str(p)!r}: expected a .npz or .safetensors file, received suffix {p.suffix!r}.")
    unknown = sorted(set(arrays) - set(AttentionWeights.NAMES))
    if unknown:
        raise WeightFileError(f"Weight file {str(p)!r}: unknown arrays {unknown}; expected names from {list(AttentionWeights.NAMES)}.")
    required = [n for n in AttentionWeights.NAMES[:4] if n not in arrays]
    if required:
        raise WeightFileError(f"Weight file {str(p)!r}: missing required arrays {required}.")
    try:
        return AttentionWeights(**arrays)
    except ValueError as err:
        raise WeightFileError(f"Weight file {str(p)!r}: {err}") from None


def _read_npz(p: Path) -> dict[str, Array]:
    try:
        with np.load(p, allow_pickle=False) as data:
            out = {}
            for name in data.files:
                try:
                    out[name] = data[name]
                except ValueError as err:  # object arrays need pickle: refused
                    raise WeightFileError(
                        f"Weight file {str(p)!r}: array {name!r} holds Python objects, which would need pickle "
                        f"to load; refused (expected plain numeric arrays). Detail: {err}"
                    ) from None
            return out
    except WeightFileError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise WeightFileError(f"Weight file {str(p)!r} is not a valid .npz archive: {err}") from None


def _read_safetensors(p: Path) -> dict[str, Array]:
    data = p.read_bytes()
    if len(data) < 8:
        raise WeightFileError(f"Weight file {str(p)!r} is truncated: {len(data)} bytes, expected at least 8.")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(_MAX_HEADER, len(data) - 8):
        raise WeightFileError(f"Weight file {str(p)!r}: header length {n} exceeds the file ({len(data)} bytes).")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightFileError(f"Weight file {str(p)!r}: header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"Weight file {str(p)!r}: header must be a JSON object, received {type(header).__name__}.")
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _ST_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise WeightFileError(
                f"Weight file {str(p)!r}: tensor {name!r} has an invalid header entry {info!r} "
                f"(expected dtype F64/F32/F16, shape, data_offsets): {err}"
            ) from None
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if not (0 <= start <= end <= len(body)) or end - start != size:
            raise WeightFileError(f"Weight file {str(p)!r}: tensor {name!r} offsets {start}..{end} do not match "
                                  f"shape {shape} and dtype {info['dtype']} or exceed the file.")
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).astype(dtype[1:])
    return out


def save_weights(weights: AttentionWeights, path: str | os.PathLike[str]) -> Path:
    """Write canonical weights as `.npz` or `.safetensors`, atomically."""
    p = Path(path)
    arrays = weights.arrays()
    if p.suffix == ".npz":
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return write_bytes_atomic(p, buf.getvalue())
    if p.suffix == ".safetensors":
        names = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16"}
        header: dict[str, Any] = {}
        blobs, offset = [], 0
        for name, a in arrays.items():
            raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
            header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
            blobs.append(raw)
            offset += len(raw)
        head = json.dumps(header).encode()
        head += b" " * (-len(head) % 8)
        return write_bytes_atomic(p, struct.pack("<Q", len(head)) + head + b"".join(blobs))
    raise WeightFileError(f"Weight file {str(p)!r}: expected a .npz or .safetensors suffix, received {p.suffix!r}.")
