"""A large audit built from a small real one, to test the reports at the scale of thirty adapters and more
without the frameworks: every fake adapter copies a real adapter's entry and evidence, under its own name
and framework family, and each cell gets its own outcome (drawn from the scenario's outcomes with a fixed
seed, some declared unsupported), so a cell shown under the wrong adapter or scenario is caught."""

from __future__ import annotations

import copy
import random
from typing import Any

# ten families, one with characters that must be escaped and one that slugs like another
FAMILIES = ("torch", "keras", "tf_keras", "jax", "flax", "onnxruntime", "paddle", "mlx", "tf-keras", "<b>haiku</b>")
DECLARED = "capabilities.returns_weights=False: synthetic, declared"


def fake_name(family: str, i: int) -> str:
    return f"{family}.Synthetic{i}"


def build(
    real: dict[str, Any], per_family: tuple[int, ...] = (5, 9, 1, 2, 3, 2, 3, 2, 2, 3), seed: int = 18
) -> dict[str, Any]:
    """An ``attnconf.audit/1`` report like `real`, its adapters replaced by ``sum(per_family)`` fakes
    (32 by default) in ``len(FAMILIES)`` families; outcomes drawn per cell, about one in ten declared
    unsupported (``evidence["declared_unsupported"]``, the outcome still measured-looking)."""
    rng = random.Random(seed)
    sources = [n for n, a in real["adapters"].items() if a["status"] != "skipped"]
    out = copy.deepcopy(real)
    out["adapters"], out["example"]["adapters"] = {}, {}
    for sc in out["scenarios"].values():
        sc["results"] = {}
    k = 0
    for family, count in zip(FAMILIES, per_family, strict=True):
        for i in range(count):
            name, src = fake_name(family, i), sources[k % len(sources)]
            k += 1
            out["adapters"][name] = dict(copy.deepcopy(real["adapters"][src]), framework=family)
            if src in real["example"]["adapters"]:
                out["example"]["adapters"][name] = copy.deepcopy(real["example"]["adapters"][src])
            for sid, sc in out["scenarios"].items():
                base = real["scenarios"][sid]["results"].get(src)
                if base is None:
                    continue
                r = copy.deepcopy(base)
                r["evidence"].pop("declared_unsupported", None)
                r["outcome"] = rng.choice(sorted(sc["outcomes"]))
                r["detail"] = f"synthetic: {name} in {sid} measured {r['outcome']}"
                if rng.random() < 0.1:
                    r["evidence"]["declared_unsupported"] = DECLARED
                sc["results"][name] = r
    return out
