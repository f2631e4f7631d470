"""Adapters that are slow, or hang in one test only (for `attnconf run --call-timeout`)."""

from __future__ import annotations

import os
import time

from attnconf.adapters.numpy_ref import NumpyAdapter

#: Seconds each call of `Slow` takes: several tests' worth passes a short call timeout, no single test does.
SLOW_CALL = 0.9

#: `HangsInOneTest` hangs in the test whose id contains this.
HANG_IN = "-causal_mask]"


class Slow(NumpyAdapter):
    name = "stall.slow"

    def multi_head_attention(self, inputs, weights, dtype):
        time.sleep(SLOW_CALL)
        return super().multi_head_attention(inputs, weights, dtype)


class HangsInOneTest(NumpyAdapter):
    name = "stall.hangs-in-one"

    def multi_head_attention(self, inputs, weights, dtype):
        if HANG_IN in os.environ.get("PYTEST_CURRENT_TEST", ""):
            time.sleep(3600)
        return super().multi_head_attention(inputs, weights, dtype)
