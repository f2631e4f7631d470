"""Conformance chapters and the pytest plugin."""
