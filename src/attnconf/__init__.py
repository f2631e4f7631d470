"""attention-conformance: a NumPy specification of attention, and a suite that holds frameworks to it."""

__version__ = "0.2.0.dev0"
