"""Adapters that break the way frameworks break: abort, hang, wrong shape, NaN."""

from __future__ import annotations

import os
import time

import numpy as np
from waiting import mark_hang_started

from attnconf.adapters.base import AttentionOutputs
from attnconf.adapters.numpy_ref import NumpyAdapter


class Aborts(NumpyAdapter):
    name = "crash.aborts"

    def multi_head_attention(self, inputs, weights, dtype):
        os.abort()


class Hangs(NumpyAdapter):
    name = "crash.hangs"

    def multi_head_attention(self, inputs, weights, dtype):
        mark_hang_started()
        time.sleep(3600)


class WrongShape(NumpyAdapter):
    name = "crash.wrong-shape"

    def multi_head_attention(self, inputs, weights, dtype):
        out = super().multi_head_attention(inputs, weights, dtype)
        return AttentionOutputs(output=out.output[:, :-1], weights=out.weights)


class ReturnsNaN(NumpyAdapter):
    name = "crash.nan"

    def multi_head_attention(self, inputs, weights, dtype):
        out = super().multi_head_attention(inputs, weights, dtype)
        return AttentionOutputs(output=np.full_like(out.output, np.nan), weights=out.weights)
