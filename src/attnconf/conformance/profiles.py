"""Hypothesis profiles of the invariant chapters: `ci`, `dev` and `thorough`.

The profiles are registered with Hypothesis when this module is imported (the pytest plugin
imports it), so Hypothesis's own ``--hypothesis-profile NAME`` selects them. Without that
option the conformance chapters run under `ci`; the plugin never loads a profile globally, so
another project's Hypothesis tests keep their own settings.

* ``ci``: derandomised (the examples are derived from each test's name: a failure reproduces
  with the profile alone), a handful of examples per test, no example database.
* ``dev``: random examples, more of them, with the example database (failures replay first).
* ``thorough``: random and many examples, for a nightly run.

Every profile has ``deadline=None``: the first call of an adapter may compile (JAX, XLA) or
start a worker process, which is not slowness of the code under test. The chapters take the
function-scoped `check` fixture, which they use read-only per example, so that health check is
suppressed, as is `too_slow` (each example is a round trip to a framework).

Random profiles run with one seed per session, chosen here and printed in the report header
and in every failure's reproduce line; ``--hypothesis-seed N`` fixes it (and also applies to
`ci`, overriding its derandomisation).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, seed, settings

F = TypeVar("F", bound=Callable[..., Any])

SUPPRESSED = (HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large)
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

PROFILES: dict[str, settings] = {
    "ci": settings(max_examples=3, derandomize=True, database=None, deadline=None, print_blob=True,
                   suppress_health_check=SUPPRESSED, phases=_PHASES),
    # derandomize is explicit: unset settings inherit from the profile active at import, which is
    # Hypothesis's own derandomized "ci" profile wherever the CI environment variable is set
    "dev": settings(max_examples=25, derandomize=False, deadline=None, print_blob=True, suppress_health_check=SUPPRESSED,
                    phases=_PHASES),
    "thorough": settings(max_examples=200, derandomize=False, deadline=None, print_blob=True, suppress_health_check=SUPPRESSED,
                         phases=_PHASES),
}
DEFAULT = "ci"

for _name, _settings in PROFILES.items():
    settings.register_profile(_name, _settings)

_session: dict[str, Any] = {"profile": None, "seed": None}


def configure(profile: str | None, seed_option: str | int | None) -> None:
    """Record the profile and seed of this session (called by the plugin's pytest_configure)."""
    _session["profile"] = profile or None
    if seed_option is not None:
        try:
            _session["seed"] = int(seed_option)
        except ValueError:
            _session["seed"] = seed_option
    elif not current().derandomize:
        _session["seed"] = random.getrandbits(32)
    else:
        _session["seed"] = None


def profile_name() -> str:
    """The profile the conformance chapters run under."""
    return _session["profile"] or DEFAULT


def current() -> settings:
    """The settings of the active profile, with the overrides every chapter needs."""
    name = profile_name()
    base = PROFILES.get(name) or settings.get_profile(name)
    suppressed = tuple(dict.fromkeys((*base.suppress_health_check, *SUPPRESSED)))
    return settings(base, deadline=None, suppress_health_check=suppressed)


def session_seed() -> int | str | None:
    """The seed every chapter runs with, or None when the profile derives it from the test name."""
    chosen: int | str | None = _session["seed"]
    return chosen


def conformance(test: F) -> F:
    """Apply the active profile (and the session seed, if any) to a Hypothesis chapter test."""
    test = current()(test)
    if session_seed() is not None:
        test = seed(session_seed())(test)
    return test


def reproduce_options() -> str:
    """The pytest options that rerun a chapter test with the same examples."""
    opts = f"--hypothesis-profile {profile_name()}"
    if session_seed() is not None:
        opts += f" --hypothesis-seed {session_seed()}"
    return opts


def describe() -> str:
    """One header line: profile, examples per test, and where the seed comes from."""
    s = current()
    how = "derandomized (seed derived from each test's name)" if session_seed() is None else f"seed {session_seed()}"
    chosen = "" if _session["profile"] else f" (default; choose with --hypothesis-profile {'|'.join(PROFILES)})"
    return f"attnconf hypothesis: profile {profile_name()!r}{chosen}, max_examples={s.max_examples}, {how}"


@contextmanager
def first_failure_only(test: Callable[..., Any]) -> Iterator[None]:
    """Run a Hypothesis chapter test without shrinking and stop at its first failing example.

    For a test declared as an expected difference (it is marked xfail): its outcome is the same
    (one failing example makes it xfailed, none makes it xpassed), but Hypothesis no longer spends
    dozens of further adapter calls looking for the smallest failing example of a departure that
    is already known and documented. Hypothesis reads a test's settings from the attribute its
    `settings` decorator sets, at call time; a release without that attribute runs unchanged.
    """
    original = getattr(test, "_hypothesis_internal_use_settings", None)
    if not isinstance(original, settings):
        yield
        return
    test._hypothesis_internal_use_settings = settings(  # type: ignore[attr-defined]
        original, phases=tuple(p for p in original.phases if p is not Phase.shrink), report_multiple_bugs=False)
    try:
        yield
    finally:
        test._hypothesis_internal_use_settings = original  # type: ignore[attr-defined]
