"""What a conformance session measured for the audit, as JSON: how it crosses from the session
process (``--attnconf-audit PATH``) to `attnconf run`.

The document is ``{"schema": "attnconf.measured/1", "audit": {name: ...}, "bank": {name: row}}``:
``audit`` holds `audit.runner.measure_here`'s entries (entry, results, example, captures), ``bank``
holds `audit.bank.bank_row`'s rows. What the report shows (the entry, each scenario's outcome,
detail and evidence, the example) goes through `schema.jsonable`, as audit.json does, so the report
reads the same whichever process measured. What is compared or measured again after crossing (the
captured effective weights of the code-path comparison, the real-weights attention rows) is kept
exact: arrays as dtype, shape and their bytes in base64; the picture (PNG) in base64.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from attnconf.audit import schema
from attnconf.audit.observe import Result

SCHEMA = "attnconf.measured/1"


def dumps(measured: dict[str, dict[str, Any]]) -> str:
    """`measured` ({"audit": {name: entry}, "bank": {name: row}}) as a JSON document."""
    doc = {
        "schema": SCHEMA,
        "audit": {name: _audit_to_json(m) for name, m in measured["audit"].items()},
        "bank": {name: _bank_to_json(row) for name, row in measured["bank"].items()},
    }
    return json.dumps(doc, allow_nan=False)


def loads(text: str) -> dict[str, dict[str, Any]]:
    """The inverse of `dumps`: results as `Result`, arrays as NumPy arrays, pictures as bytes.
    Raises ValueError for a document of another schema."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"expected a {SCHEMA} document, received schema {got!r}")
    return {
        "audit": {name: _audit_from_json(m) for name, m in doc["audit"].items()},
        "bank": {name: _bank_from_json(row) for name, row in doc["bank"].items()},
    }


def _audit_to_json(m: dict[str, Any]) -> dict[str, Any]:
    results = {
        sid: {"outcome": r.outcome, "detail": r.detail, "evidence": r.evidence} for sid, r in m["results"].items()
    }
    captures = {
        probe: [dtype, value if isinstance(value, str) else array_to_json(value)]
        for probe, (dtype, value) in m["captures"].items()
    }
    return {
        "entry": schema.jsonable(m["entry"]),
        "results": schema.jsonable(results),
        "example": schema.jsonable(m["example"]),
        "captures": captures,
    }


def _audit_from_json(m: dict[str, Any]) -> dict[str, Any]:
    captures = {
        probe: (dtype, value if isinstance(value, str) else array_from_json(value))
        for probe, (dtype, value) in m["captures"].items()
    }
    return {
        "entry": m["entry"],
        "results": {sid: Result(**r) for sid, r in m["results"].items()},
        "example": m["example"],
        "captures": captures,
    }


def _bank_to_json(row: dict[str, Any]) -> dict[str, Any]:
    bank = row["bank"]
    if bank is not None:
        bank = {
            "sentences": list(bank.sentences),
            "tokens": [list(t) for t in bank.tokens],
            "index": [int(i) for i in bank.index],
            "weights": [array_to_json(w) for w in bank.weights],
        }
    png = None if row["png"] is None else base64.b64encode(row["png"]).decode("ascii")
    return {**row, "bank": bank, "png": png}


def _bank_from_json(row: dict[str, Any]) -> dict[str, Any]:
    from attnconf.realweights import BankAttention

    bank = row["bank"]
    if bank is not None:
        bank = BankAttention(
            tuple(bank["sentences"]),
            tuple(tuple(t) for t in bank["tokens"]),
            tuple(bank["index"]),
            tuple(array_from_json(w) for w in bank["weights"]),
        )
    png = None if row["png"] is None else base64.b64decode(row["png"])
    return {**row, "bank": bank, "png": png}


def array_to_json(a: Any) -> dict[str, Any]:
    """An array, exactly: {"dtype": name, "shape": [...], "base64": its bytes (little-endian, C order)}."""
    arr = np.asarray(a)
    if arr.dtype.hasobject:
        raise TypeError(f"expected an array of numbers, received dtype {arr.dtype}")
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "base64": base64.b64encode(data).decode("ascii")}


def array_from_json(d: dict[str, Any]) -> np.ndarray[Any, Any]:
    """The array `array_to_json` wrote (bfloat16 and the other ml_dtypes types included)."""
    try:
        dtype = np.dtype(d["dtype"])
    except TypeError:
        import ml_dtypes

        dtype = np.dtype(getattr(ml_dtypes, d["dtype"]))
    data = base64.b64decode(d["base64"])
    arr: np.ndarray[Any, Any] = np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(d["shape"])
    return arr
