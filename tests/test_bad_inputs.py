"""Bad input at the reference and contract entries: one clear message naming the argument."""

from __future__ import annotations

import traceback

import pytest
from bad_inputs import CASES


@pytest.mark.parametrize("entry,what,call,fragment", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_gets_a_clear_error(entry, what, call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert fragment in message, message
    assert "Received" in message or "received" in message, message
    # raised by attnconf itself, not from deep inside NumPy
    last = traceback.extract_tb(info.tb)[-1]
    assert "/attnconf/" in last.filename, f"raised from {last.filename}:{last.lineno}"


def test_docs_table_is_generated_from_these_cases():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bad_inputs_table.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
