"""The report formats: schema ids, JSON conversion, validation, and reading result files safely.

`audit.schema.json` documents ``attnconf.audit/1`` (what `attnconf audit` writes) and
`report.schema.json` documents ``attnconf.report/1`` (what `attnconf report` writes). JSON never holds
NaN or inf (strict parsers reject them): non-finite numbers are written as the strings "nan", "inf"
and "-inf", and floats are rounded to 6 significant digits so that reports are stable.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

AUDIT_SCHEMA = "attnconf.audit/1"
REPORT_SCHEMA = "attnconf.report/1"
_FILES = {AUDIT_SCHEMA: "audit.schema.json", REPORT_SCHEMA: "report.schema.json"}
SIGNIFICANT = 6
MAX_BYTES = 256 * 1024 * 1024


class ReportFileError(ValueError):
    """A result file is missing, unreadable, not JSON, of an unknown schema, or invalid; names the file."""


def jsonable(obj: Any) -> Any:
    """`obj` with NumPy values, tuples and non-finite floats turned into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return float(f"{x:.{SIGNIFICANT}g}")
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def number(value: Any) -> float:
    """A number from a report (the strings "nan", "inf", "-inf" included)."""
    return float(value)


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


@functools.cache
def load_schema(schema_id: str) -> dict[str, Any]:
    """The JSON Schema document of `schema_id`."""
    return json.loads((Path(__file__).parent / _FILES[schema_id]).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def problems(doc: dict[str, Any], schema_id: str) -> list[str]:
    """Where `doc` departs from its schema and from the rules a schema cannot say; [] when valid.

    Uses `jsonschema` when it is installed (the ``report`` extra), plus: each result's outcome is one
    of its scenario's outcomes and names an adapter of the report.
    """
    found: list[str] = []
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the report extra is not installed
        jsonschema = None
    if jsonschema is not None:
        validator = jsonschema.Draft202012Validator(load_schema(schema_id))
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            found.append(f"at {where}: {err.message[:300]}")
        if found:
            return found
    if schema_id == AUDIT_SCHEMA:
        adapters = doc.get("adapters", {})
        for sid, sc in doc.get("scenarios", {}).items():
            for name, r in sc.get("results", {}).items():
                if name not in adapters:
                    found.append(f"at scenarios.{sid}.results: adapter {name!r} is not in `adapters`")
                if r.get("outcome") not in sc.get("outcomes", {}):
                    found.append(f"at scenarios.{sid}.results.{name}.outcome: {r.get('outcome')!r} is not one of "
                                 f"the scenario's outcomes")
    return found


def validate(doc: dict[str, Any], schema_id: str) -> None:
    """Raise `ValueError` listing every problem of `doc` against `schema_id`."""
    found = problems(doc, schema_id)
    if found:
        raise ValueError(f"not a valid {schema_id} document: " + "; ".join(found[:5]))


def read(path: str | os.PathLike[str], accepted: tuple[str, ...] = (AUDIT_SCHEMA,)) -> dict[str, Any]:
    """Read and validate a result file; `ReportFileError` says which file and what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise ReportFileError(f"{p}: no such file")
    if p.is_dir():
        raise ReportFileError(f"{p}: is a directory, expected an audit.json file")
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ReportFileError(f"{p}: {size} bytes, larger than the {MAX_BYTES} bytes a result file may have")
        text = p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReportFileError(f"{p}: cannot be read as UTF-8 text: {err}") from None
    if not text.strip():
        raise ReportFileError(f"{p}: is empty, expected a JSON document with \"schema\": {accepted[0]!r}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReportFileError(f"{p}: not valid JSON (truncated or corrupt?): {err.msg} at line {err.lineno}, "
                              f"column {err.colno}") from None
    except RecursionError:
        raise ReportFileError(f"{p}: not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ReportFileError(f"{p}: expected a JSON object with \"schema\": {accepted[0]!r}, "
                              f"received a JSON {type(doc).__name__}")
    found = doc.get("schema")
    if found not in accepted:
        known = " or ".join(repr(a) for a in accepted)
        what = "has no \"schema\" field" if found is None else f"has schema {found!r}"
        hint = ""
        if isinstance(found, str) and found.split("/")[0] == accepted[0].split("/")[0]:
            hint = " (written by another version of attnconf: upgrade or downgrade attnconf to read it)"
        raise ReportFileError(f"{p}: {what}; this attnconf reads {known}{hint}")
    errors = problems(doc, found)
    if errors:
        raise ReportFileError(f"{p}: does not match the {found} schema: " + "; ".join(errors[:5]))
    return doc
