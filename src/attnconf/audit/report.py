"""Writing the audit reports: audit.json, audit.md and audit.html, each atomically.

All three are rendered before the first is written, and each is written to a temporary file that
is then renamed: an interrupted or failing write leaves the previous report intact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnconf.atomicio import write_text_atomic
from attnconf.audit import html, markdown, schema

FILES = ("audit.json", "audit.md", "audit.html")


def write_reports(report: dict[str, Any], out_dir: str | os.PathLike[str],
                  extra_sections: Sequence[tuple[str, str]] = ()) -> list[Path]:
    """Validate `report` (``attnconf.audit/1``) and write the three files into `out_dir`; their paths.

    `extra_sections`: ``(title, html)`` pairs appended to audit.html (the html is trusted: the caller
    escapes its own text and embeds images inline); the real-weights "bank" pictures use this hook.
    """
    schema.validate(report, schema.AUDIT_SCHEMA)
    texts = {
        "audit.json": schema.dumps(report),
        "audit.md": markdown.render(report),
        "audit.html": html.render(report, extra_sections),
    }
    out = Path(out_dir)
    return [write_text_atomic(out / name, texts[name]) for name in FILES]
