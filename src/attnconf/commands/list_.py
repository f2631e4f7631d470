"""List the adapters the registry can see: whether their framework is importable, its version,
and their capabilities. Capabilities read release metadata and, for some adapters (Flax NNX),
the framework's signatures, which imports that framework; no framework is called."""

from __future__ import annotations

import argparse
import json

from attnconf.adapters import registry
from attnconf.adapters.support import distribution_versions
from attnconf.adapters.traits import traits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--capabilities", "-c", action="store_true", help="show every capability")


def describe(handle: registry.AdapterHandle) -> dict[str, object]:
    obj = handle.obj
    caps = obj.capabilities.as_dict() if obj is not None else {}
    t = traits(obj)
    return {
        "name": handle.name,
        "source": handle.source,
        "available": handle.available,
        "reason": handle.missing,
        "framework": t.framework,
        "api": t.api,
        "versions": distribution_versions(t.distributions) if t.distributions else {},
        "capabilities": caps,
    }


def _flags(caps: dict[str, object]) -> str:
    keys = ("gqa", "kdim_vdim", "value_dim", "output_dim", "custom_scale", "returns_weights",
            "weight_round_trip", "gradients")
    on = [k for k in keys if caps.get(k)]
    causal = f"causal:{caps.get('causal_alignment')}" if caps.get("causal") else "no-causal"
    return " ".join([causal, *on])


def main(args: argparse.Namespace) -> int:
    rows = [describe(h) for h in registry.discover()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(str(r["name"])) for r in rows), default=10)
    for r in rows:
        caps = r["capabilities"]
        assert isinstance(caps, dict)
        status = "ok" if r["available"] else "missing"
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items()) or "-"  # type: ignore[union-attr]
        line = f"{r['name']:<{width}}  {status:<7}  {caps.get('level', '?'):<6}  {versions}"
        print(line)
        if r["available"]:
            print(f"{'':<{width}}    dtypes: {', '.join(caps.get('dtypes', []))}; {_flags(caps)}")
            for what, why in (caps.get("limits") or {}).items():  # type: ignore[union-attr]
                print(f"{'':<{width}}    cannot {what}: {why}")
            for what, decl in (caps.get("precision") or {}).items():  # type: ignore[union-attr]
                print(f"{'':<{width}}    {what} at {decl['as_accurate_as']} accuracy: {decl['why']}")
            for what, decl in (caps.get("scale_precision") or {}).items():  # type: ignore[union-attr]
                print(f"{'':<{width}}    {what} with the logit scale in {decl['scale_in']}: {decl['why']}")
            if args.capabilities:
                for k, v in caps.items():
                    print(f"{'':<{width}}      {k} = {v}")
        else:
            print(f"{'':<{width}}    {r['reason']}")
    return 0
