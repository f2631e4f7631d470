"""Run the tox matrix one environment at a time and tabulate what each took (issue 6).

    python scripts/tox_matrix.py [--envs keras35-jax,tf216,...] [--json matrix.json] [-- TOX ARGS]

Without `--envs` it runs every framework environment of `tox.ini` (the env_list less `test` and
`lint`), then `report`, one after the other, so that each environment's time is its own on a
shared 2-core machine. For each it records tox's own split (`setup`: creating the environment
and installing what it pins; `cmd`: its commands, i.e. `attnconf run`), the exit status, and the
versions `attnconf run` found (from `results/<env>/summary.json`). It prints a Markdown table
(the one in the README) and, with `--json`, writes the rows.

A second run reuses the environments tox already built (setup then takes seconds): delete
`.tox/` first to measure installation. Nothing is asserted: this script measures and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: tox 4's last line per environment: "  NAME: OK (12.3=setup[10.1]+cmd[2.2] seconds)"
#: (several commands: "cmd[7.0,13.7]", summed here)
SUMMARY = re.compile(r"^\s*(?P<env>\S+): (?P<status>OK|FAIL\b[^(]*|SKIP\b[^(]*)\s*\((?P<total>[\d.]+)"
                     r"(?:=setup\[(?P<setup>[\d.]+)\]\+cmd\[(?P<cmd>[\d.,]+)\])? seconds\)")


def tox_command() -> list[str]:
    """tox beside this interpreter when there is one, else on PATH."""
    here = Path(sys.executable).parent / "tox"
    return [str(here)] if here.exists() else ["tox"]


def framework_envs() -> list[str]:
    """The env_list of tox.ini expanded by tox itself, less the suite's own environments."""
    out = subprocess.run([*tox_command(), "-c", str(ROOT / "tox.ini"), "list", "--no-desc"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    names = [line.strip() for line in out.splitlines() if line.strip() and not line.startswith(("default", "additional"))]
    defaults = names[: names.index("report")] if "report" in names else names
    return [n for n in defaults if n not in ("test", "lint", "report")]


def results_dir() -> Path:
    return Path(os.environ.get("ATTNCONF_RESULTS", ROOT / "results"))


def run_env(env: str, extra: list[str]) -> dict[str, Any]:
    """One `tox run -e env`, its output kept under results/logs/, its summary line parsed."""
    logs = results_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args = [*tox_command(), "-c", str(ROOT / "tox.ini"), "run", "-e", env, *(["--", *extra] if extra else [])]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    (logs / f"{env}.log").write_text(done.stdout + done.stderr)
    row: dict[str, Any] = {"env": env, "exit": done.returncode, "wall_s": round(wall, 1),
                           "setup_s": None, "cmd_s": None, "status": "?"}
    for line in done.stdout.splitlines():
        m = SUMMARY.match(line)
        if m and m["env"] == env:
            row.update(status=m["status"].strip(), setup_s=m["setup"] and float(m["setup"]),
                       cmd_s=m["cmd"] and round(sum(float(c) for c in m["cmd"].split(",")), 2))
    summary = results_dir() / env / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        adapters = data.get("adapters", [])
        row["adapters"] = {a.get("name"): a.get("status") for a in adapters if isinstance(a, dict)}
        row["versions"] = sorted({f"{k} {v}" for a in adapters if isinstance(a, dict)
                                  for k, v in (a.get("versions") or {}).items()})
    return row


def table(rows: list[dict[str, Any]]) -> str:
    def s(x: Any) -> str:
        return "" if x is None else f"{x:.0f} s"

    lines = ["| environment | install (tox setup) | run (commands) | wall | result | adapters (status) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        statuses: dict[str, int] = {}
        for st in (r.get("adapters") or {}).values():
            statuses[st] = statuses.get(st, 0) + 1
        ad = ", ".join(f"{n} {st}" for st, n in sorted(statuses.items())) or "-"
        lines.append(f"| {r['env']} | {s(r['setup_s'])} | {s(r['cmd_s'])} | {s(r['wall_s'])} | {r['status']} | {ad} |")
    total = sum(r["wall_s"] for r in rows)
    setup = sum(r["setup_s"] or 0 for r in rows)
    cmd = sum(r["cmd_s"] or 0 for r in rows)
    lines.append(f"| **all {len(rows)}** | {setup:.0f} s | {cmd:.0f} s | {total:.0f} s ({total / 60:.1f} min) | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", help="comma-separated environments (default: every framework environment)")
    parser.add_argument("--no-report", action="store_true", help="do not run `tox -e report` at the end")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("extra", nargs="*", help="arguments after -- go to every environment's command")
    args = parser.parse_args(argv)
    envs = args.envs.split(",") if args.envs else framework_envs()
    if not args.no_report:
        envs.append("report")
    print(f"# tox matrix: {len(envs)} environments, one at a time; {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for i, env in enumerate(envs, 1):
        print(f"[{i}/{len(envs)}] {env} ...", end=" ", flush=True)
        row = run_env(env, args.extra)
        rows.append(row)
        print(f"{row['status']} exit {row['exit']} setup {row['setup_s']} s, cmd {row['cmd_s']} s, "
              f"wall {row['wall_s']} s; load {os.getloadavg()[0]:.1f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
