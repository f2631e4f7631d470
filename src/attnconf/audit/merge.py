"""The cross-version report: many audit.json files (framework versions, machines, tox environments)
merged into one ``attnconf.report/1`` document, with the version at which an outcome changed marked.

For each scenario and adapter the runs are ordered by the adapter's framework version (then the
other versions it reports, then the input label); an entry is ``changed`` when its outcome differs
from the previous entry's with another version, and ``conflict`` when two runs of the same versions
disagree (different machines, or a flaky outcome).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from attnconf import __version__
from attnconf.audit import schema


def label_for(path: str | Path) -> str:
    """A run's label: the directory name for ``.../<env>/audit.json``, else the file name."""
    p = Path(path)
    return p.parent.name or p.stem if p.name == "audit.json" else p.stem


def _primary(adapter: dict[str, Any]) -> str | None:
    versions = adapter.get("versions", {})
    wanted = canonicalize_name(adapter.get("framework", "") or "")
    for dist in versions:
        if canonicalize_name(dist) == wanted:
            return str(dist)
    others = [d for d in versions if canonicalize_name(d) != "numpy"]
    return others[0] if others else (next(iter(versions)) if versions else None)


def _version_key(text: str) -> tuple[int, Any]:
    try:
        return (0, Version(text))
    except InvalidVersion:
        return (1, text)


def version_label(adapter: dict[str, Any]) -> str:
    """The versions of a run of an adapter, its framework first: ``keras 3.8.0, jax 0.4.38``."""
    versions = adapter.get("versions", {})
    primary = _primary(adapter)
    order = ([primary] if primary else []) + sorted(d for d in versions if d != primary)
    return ", ".join(f"{d} {versions[d]}" for d in order) or "versions unknown"


def _sort_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    versions, primary = entry["versions"], entry["primary"]
    first = _version_key(versions[primary]) if primary in versions else (2, "")
    rest = tuple((d, _version_key(v)) for d, v in sorted(versions.items()) if d != primary)
    return (first, rest, entry["label"], entry["input"])


def merge(docs: list[dict[str, Any]], paths: list[str]) -> dict[str, Any]:
    """Merge validated ``attnconf.audit/1`` documents (`paths` name them) into ``attnconf.report/1``."""
    labels = [label_for(p) for p in paths]
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):  # make labels unique: env, env (2), ...
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[i] = f"{lab} ({seen[lab]})"
    inputs = [{"path": str(p), "label": labels[i], "schema": d["schema"], "attnconf": d["attnconf"],
               "environment": d["environment"], "started": d["run"]["started"]} for i, (p, d) in enumerate(zip(paths, docs))]
    groups: dict[str, str] = {}
    meta: dict[str, dict[str, Any]] = {}
    history: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for i, doc in enumerate(docs):
        groups.update(doc["groups"])
        for sid, sc in doc["scenarios"].items():
            meta[sid] = {k: sc[k] for k in ("group", "title", "description", "spec", "spec_note", "outcomes")}
            for name, r in sc["results"].items():
                adapter = doc["adapters"][name]
                history.setdefault(sid, {}).setdefault(name, []).append({
                    "input": i, "label": labels[i], "versions": dict(adapter["versions"]),
                    "primary": _primary(adapter), "version_label": version_label(adapter),
                    "outcome": r["outcome"], "detail": r["detail"],
                })
    changes: list[dict[str, Any]] = []
    scenarios: dict[str, Any] = {}
    for sid in sorted(meta, key=lambda s: (list(groups).index(meta[s]["group"]) if meta[s]["group"] in groups
                                          else len(groups), _catalog_index(s), s)):
        adapters: dict[str, Any] = {}
        for name in sorted(history.get(sid, {})):
            entries = sorted(history[sid][name], key=_sort_key)
            prev: dict[str, Any] | None = None
            for entry in entries:
                entry["changed"] = False
                entry["conflict"] = False
                if prev is not None and entry["outcome"] != prev["outcome"]:
                    if entry["version_label"] == prev["version_label"]:
                        entry["conflict"] = prev["conflict"] = True
                    else:
                        entry["changed"] = True
                        changes.append({"scenario": sid, "adapter": name, "from_versions": prev["version_label"],
                                        "to_versions": entry["version_label"], "before": prev["outcome"],
                                        "after": entry["outcome"]})
                prev = entry
            for entry in entries:
                del entry["primary"]
            outcomes = {e["outcome"] for e in entries}
            adapters[name] = {"history": entries, "changed": any(e["changed"] for e in entries),
                              "conflict": any(e["conflict"] for e in entries), "outcomes": sorted(outcomes)}
        scenarios[sid] = {**meta[sid], "adapters": adapters}
    merged = {"schema": schema.REPORT_SCHEMA, "attnconf": __version__, "inputs": inputs,
              "groups": {g: t for g, t in groups.items()}, "scenarios": scenarios, "changes": changes}
    return schema.jsonable(merged)  # type: ignore[no-any-return]


def _catalog_index(sid: str) -> int:
    from attnconf.audit.scenarios import SCENARIOS

    ids = list(SCENARIOS)
    base = re.sub(r"\..*$", "", sid)
    return ids.index(sid) if sid in ids else (ids.index(base) if base in ids else len(ids))


def read_all(paths: list[str | Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Expand directories (every audit.json below, sorted), then read and validate each file.

    Raises `schema.ReportFileError` naming the first bad file, or when a directory holds none.
    """
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(p.rglob("audit.json"))
            if not found:
                raise schema.ReportFileError(f"{p}: directory holds no audit.json file")
            files += found
        else:
            files.append(p)
    unique = list(dict.fromkeys(files))
    return [schema.read(f) for f in unique], [str(f) for f in unique]
