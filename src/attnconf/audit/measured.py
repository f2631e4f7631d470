"""What a conformance session measured for the audit, as JSON: how it crosses from the session
process (``--attnconf-audit PATH``) to `attnconf run`.

The document is ``{"schema": "attnconf.measured/1", "audit": {name: ...}, "bank": {name: row}}``:
``audit`` holds `audit.runner.measure_here`'s entries and ``bank`` `audit.bank.bank_row`'s rows.
Both are plain JSON values already, made where the adapter runs (results as ``{"outcome",
"detail", "evidence"}``, captured arrays exact, the picture in base64), so this module only wraps
them in a versioned document and checks the version on the way back.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA = "attnconf.measured/1"


def dumps(measured: dict[str, dict[str, Any]]) -> str:
    """`measured` ({"audit": {name: entry}, "bank": {name: row}}) as a JSON document (strict JSON:
    a NaN or infinity left in a value raises ValueError)."""
    return json.dumps({"schema": SCHEMA, "audit": measured["audit"], "bank": measured["bank"]}, allow_nan=False)


def loads(text: str) -> dict[str, dict[str, Any]]:
    """The inverse of `dumps`. Raises ValueError for a document of another schema."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"expected a {SCHEMA} document, received schema {got!r}")
    return {"audit": doc["audit"], "bank": doc["bank"]}
