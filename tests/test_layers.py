"""The package's layers: nothing imports upward (docs/architecture.md).

Every `attnconf` import in the package's source, module level or inside a function, is checked
against the floors below: a module may import its own floor and the floors beneath it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import attnconf

SOURCE = Path(attnconf.__file__).parent

#: Floors, bottom first. A unit is a top-level module or package of `attnconf`; the reference's
#: leaf helpers (validation, precisions) are a unit of their own, beneath the contract.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("reference.leaf", "errors", "atomicio", "memory", "__version__"),
    ("contract", "reference"),
    ("weights_io", "realweights"),
    ("adapters",),
    ("conformance", "audit", "bench"),
    ("ci", "commands", "cli", "__main__"),
)
FLOOR = {unit: i for i, units in enumerate(FLOORS) for unit in units}
LEAF = {"attnconf.reference._checks", "attnconf.reference.precision"}


def unit(module: str) -> str:
    """The layer unit of a dotted `attnconf...` module name."""
    if module in LEAF:
        return "reference.leaf"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__version__"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each `attnconf` import in the file, names imported from the package included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "attnconf":
            if node.module == "attnconf":
                found += [(node.lineno, f"attnconf.{a.name}") for a in node.names]
            else:
                found += [(node.lineno, node.module)]
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                          if f"{node.module}.{a.name}" in LEAF]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "attnconf"]
    return found


def module_name(path: Path) -> str:
    rel = path.relative_to(SOURCE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_every_unit_has_a_floor() -> None:
    units = {unit(module_name(p)) for p in SOURCE.rglob("*.py")}
    assert units <= set(FLOOR), f"modules with no floor: {sorted(units - set(FLOOR))}"


def test_nothing_imports_upward() -> None:
    upward = []
    for path in sorted(SOURCE.rglob("*.py")):
        here = unit(module_name(path))
        for line, target in imports(path):
            there = unit(target)
            if FLOOR.get(there, -1) > FLOOR[here]:
                upward.append(f"{path.relative_to(SOURCE.parent)}:{line}: {here} (floor {FLOOR[here]}) imports "
                              f"{target} ({there}, floor {FLOOR[there]})")
    assert not upward, "imports upward:\n" + "\n".join(upward)


def test_the_contract_stands_on_the_leaf_helpers_only() -> None:
    targets = {unit(t) for _, t in imports(SOURCE / "contract.py")}
    assert targets <= {"reference.leaf"}, targets


def test_the_check_can_fail(tmp_path: Path) -> None:
    """A reference module that imported an adapter would be reported."""
    bad = tmp_path / "attention.py"
    bad.write_text("from attnconf.adapters.base import AttentionInputs\nfrom attnconf import contract\n")
    assert [unit(t) for _, t in imports(bad)] == ["adapters", "contract"]
    assert FLOOR["adapters"] > FLOOR["reference"]
