"""A module whose import fails, like a framework built against the wrong protobuf."""

raise ImportError("simulated: this adapter's framework failed to import (protobuf version clash)")
