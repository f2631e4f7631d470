"""A caller's own adapter, as it would sit at the root of a repository that uses the action.

It wraps the NumPy reference itself, so the example runs anywhere; a real one wraps the caller's
kernel (see docs/writing-an-adapter.md).
"""

from attnconf.adapters.numpy_ref import NumpyAdapter


class MyAttention(NumpyAdapter):
    name = "my_adapter.MyAttention"
