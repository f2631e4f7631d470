"""Running one scenario against one adapter: calls through the contract, errors caught, a `Result` back.

A scenario's `measure(ctx)` calls the adapter only through `Context` (which turns what the adapter
raises into `AdapterRaised` and checks what it returns against the contract), measures numbers, and
classifies them (`classify.py`). `run_scenario` maps what went wrong to an outcome:

- the adapter (or its framework) raised: ``rejected`` (a documented refusal, with the message) where
  the adapter declares it cannot do what the scenario needs (`Context.declared_unsupported`) or raised
  `NotImplementedError`; else the scenario's `on_error` outcome (``crashed``, or ``rejected`` where
  the scenario counts any refusal of its input as one);
- it returned something the contract does not allow (wrong type or shape): ``invalid``;
- the scenario needs a method or capability the adapter lacks: ``unsupported``, with the reason;
- the audit itself failed: ``audit_error``, with the traceback (a bug here, never blamed on the adapter).

A result measured where the adapter declares it cannot go carries the declared reason in its
evidence (``evidence["declared_unsupported"]``): the reports show it as not applicable.

`WorkerError` (the adapter's worker process crashed or hung) is not caught: the runner owns that.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from attnconf.adapters.worker import AdapterCallError, WorkerError
from attnconf.contract import AttentionOutputs
from attnconf.reference._checks import FLOAT_DTYPES

if TYPE_CHECKING:
    from attnconf.audit.probes import Probe
    from attnconf.audit.scenarios import Scenario

Array = np.ndarray[Any, Any]
MESSAGE_LIMIT = 400
#: What an adapter raises to say "I do not do this" (Python's convention), shown as ``rejected``.
REFUSALS = ("NotImplementedError",)


@dataclass
class Result:
    """One scenario's outcome for one adapter: the outcome, a one-line summary, the measured numbers."""

    outcome: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


class AdapterRaised(Exception):
    """The adapter (or its framework) raised; `type_name` and `message` are what it raised."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type_name, "message": _clip(self.message)}


class Unsupported(Exception):
    """The scenario needs something the adapter does not have (the message says what)."""


class InvalidOutput(Exception):
    """The adapter returned something the contract does not allow (the message says what)."""


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


class Context:
    """One adapter during one audit: its calls (memoised per probe) and captured arrays.

    `captures` keeps (dtype, effective weights or "raised TYPE") by probe name for the cross-adapter
    comparison of code paths; they are not written to the report.
    """

    def __init__(self, adapter: Any):
        self.adapter = adapter
        self.name: str = adapter.name
        self.capabilities = adapter.capabilities
        self._memo: dict[str, Any] = {}
        self.captures: dict[str, tuple[str, Array | str]] = {}

    def has(self, method: str) -> bool:
        """Whether the adapter implements an optional method (`base.OptionalMethods`)."""
        return callable(getattr(self.adapter, method, None))

    def require(self, method: str) -> None:
        if not self.has(method):
            raise Unsupported(f"the adapter has no `{method}` (optional method, attnconf.adapters.base.OptionalMethods)")

    def require_dtype(self, dtype: str) -> None:
        # a dtype the framework cannot run (capabilities.limits) is still measured: what it does there
        if dtype not in self.capabilities.dtypes and self.capabilities.limit(dtype) is None:
            raise Unsupported(f"the adapter does not run {dtype} (capabilities.dtypes)")

    def declared_unsupported(self, needs: tuple[str, ...]) -> str | None:
        """Why the adapter declares it cannot do one of `needs` (dtypes and `Capabilities` flags), or None.

        A dtype left out of `capabilities.dtypes` or a flag set False; the reason is the one in
        `capabilities.limits` where the adapter gives one.
        """
        caps = self.capabilities
        for what in needs:
            if what in FLOAT_DTYPES:
                declared = what not in caps.dtypes
                text = f"capabilities.dtypes leaves out {what}"
            else:
                declared = getattr(caps, what) is False
                text = f"capabilities.{what}=False"
            if declared:
                why = caps.limit(what)
                return f"{text}: {why}" if why else text
        return None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call an adapter method; what it raises becomes `AdapterRaised` (worker crashes pass through)."""
        try:
            return getattr(self.adapter, method)(*args, **kwargs)
        except WorkerError:
            raise
        except AdapterCallError as err:
            raise AdapterRaised(err.type_name, err.message) from None
        except Exception as err:
            raise AdapterRaised(type(err).__name__, str(err)) from None

    def _memoised(self, key: str, fn: Any) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = ("ok", fn())
            except (AdapterRaised, InvalidOutput) as err:
                self._memo[key] = ("err", err)
        kind, value = self._memo[key]
        if kind == "err":
            raise value
        return value

    def layer(self, probe: Probe) -> AttentionOutputs:
        """`multi_head_attention` on the probe (inputs and weights rounded to its dtype), checked.
        `Unsupported` for an adapter without one (``level="rotary"``: a rotary embedding only)."""
        if self.capabilities.level == "rotary" or not self.has("multi_head_attention"):
            raise Unsupported(f"capabilities.level={self.capabilities.level!r}: the adapter has no attention "
                              "(multi_head_attention), only what its level names")
        def run() -> AttentionOutputs:
            x, w = probe.cast()
            try:
                return self.check_outputs(self.call("multi_head_attention", x, w, probe.dtype), probe)
            except AdapterRaised as err:
                self.captures.setdefault(probe.name, (probe.dtype, f"raised {err.type_name}"))
                raise
        return self._memoised(f"layer:{probe.name}", run)  # type: ignore[no-any-return]

    def native(self, probe: Probe, native_mask: Array) -> AttentionOutputs:
        """`native_mask_attention` on the probe with `native_mask` handed to the framework unconverted."""
        self.require("native_mask_attention")
        x, w = probe.cast()
        return self.check_outputs(self.call("native_mask_attention", x, w, probe.dtype, native_mask), probe)

    def effective(self, probe: Probe, out: AttentionOutputs | None = None) -> Array:
        """Effective weights `(B, H, T, S)` of the probe's layer output (captured for code paths)."""
        out = self.layer(probe) if out is None else out
        eff = probe.effective(out.output)
        self.captures.setdefault(probe.name, (probe.dtype, eff))
        return eff

    def check_outputs(self, out: Any, probe: Probe) -> AttentionOutputs:
        if not isinstance(out, AttentionOutputs):
            raise InvalidOutput(f"returned {type(out).__name__}, expected AttentionOutputs")
        expected = (probe.B, probe.T, probe.weights.output_dim)
        got = np.shape(out.output)
        if got != expected:
            raise InvalidOutput(f"output has shape {got}, expected (B, T, E_out)={expected}")
        if out.weights is not None and np.ndim(out.weights) not in (3, 4):
            raise InvalidOutput(f"attention weights have shape {np.shape(out.weights)}, expected (B, H, T, S)")
        return out


def run_scenario(scenario: Scenario, ctx: Context) -> Result:
    """Measure `scenario` on the adapter in `ctx`; see the module docstring for the outcomes."""
    declared = ctx.declared_unsupported(scenario.needs())
    result = _measure(scenario, ctx, declared)
    if declared and result.outcome not in ("unsupported", "audit_error"):
        result.evidence["declared_unsupported"] = declared
    return result


def _measure(scenario: Scenario, ctx: Context, declared: str | None) -> Result:
    try:
        return scenario.measure(ctx)
    except WorkerError:
        raise
    except Unsupported as err:
        return Result("unsupported", str(err), {"reason": str(err)})
    except AdapterRaised as err:
        raised = f"raised {err.type_name}: {_clip(err.message)}"
        if declared:
            return Result("rejected", f"refused, as declared ({declared}): {raised}", {"error": err.as_dict()})
        if err.type_name in REFUSALS:
            return Result("rejected", f"refused: {raised}", {"error": err.as_dict()})
        return Result(scenario.on_error, raised, {"error": err.as_dict()})
    except InvalidOutput as err:
        return Result("invalid", f"broke the adapter contract: {err}", {"reason": str(err)})
    except Exception as err:  # a bug in the audit, reported as such, never as the adapter's outcome
        return Result("audit_error", f"the audit failed: {type(err).__name__}: {err}",
                      {"traceback": traceback.format_exc(limit=6)})
