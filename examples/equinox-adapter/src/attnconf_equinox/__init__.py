"""An attnconf adapter for Equinox's `eqx.nn.MultiheadAttention` (the plug-in example)."""

from attnconf_equinox.adapter import EquinoxMHA

__all__ = ["EquinoxMHA"]
