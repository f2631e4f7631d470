"""Worker processes: frameworks that cannot share a process run behind a proxy.

Keras picks one backend per process, and TensorFlow and torch in one process are fragile, so
adapters that declare a `process_group` run in a worker process per group. The parent keeps a
`RemoteAdapter` proxy with the adapter's name and capabilities (read from its class: release
metadata, and for some adapters the framework's signatures, which imports that framework; it never
calls it) and forwards calls over a pipe. A worker that crashes or hangs raises
`WorkerError` for that call only; the next call starts a fresh worker.

Memory: a worker may be given a ceiling (`memory_limit`, bytes of resident memory). While a call
runs, the parent polls the worker's resident high-water mark (``VmHWM``, which sees a spike
between two polls) every `MEMORY_POLL` seconds and kills the worker once it passes the ceiling;
the call raises `WorkerError` "exceeded the memory budget of N GiB". Not an address-space limit
(``RLIMIT_AS``): TensorFlow reserves virtual ranges far beyond what it touches, and under a
limit of 1-2 GiB its import fails or aborts (``std::bad_alloc``) at 0.8 GB resident.
`Worker.peak` is the largest resident memory seen in the worker's processes.

Frames are length-prefixed pickles exchanged only between this package's own two processes.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, BinaryIO

from attnconf.adapters.traits import traits
from attnconf.memory import format_size, peak_rss_bytes, rss_bytes

_HEADER = struct.Struct("!Q")
DEFAULT_TIMEOUT = 300.0
#: Seconds between two reads of a busy worker's resident memory.
MEMORY_POLL = 0.05


class WorkerError(RuntimeError):
    """The worker process crashed, hung, or could not start."""


class AdapterCallError(RuntimeError):
    """The adapter raised inside the worker; carries the original type name and message."""

    def __init__(self, type_name: str, message: str, remote_traceback: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


def _write(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read(fd: int, deadline: float | None = None) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


class Worker:
    """One worker process with environment `env`; killed past `memory_limit` bytes resident (None: no limit)."""

    def __init__(self, env: dict[str, str], timeout: float = DEFAULT_TIMEOUT, memory_limit: int | None = None):
        self.env = dict(env)
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()
        self.loaded: set[str] = set()
        self.peak = 0  # bytes: the largest resident memory seen in this worker's processes

    def resident(self) -> int:
        """Resident memory of the running worker process now (bytes; 0 if none runs)."""
        return rss_bytes(self.proc.pid) if self.proc is not None and self.proc.poll() is None else 0

    def _await_reply(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        """Wait until the reply starts; kill the worker past its deadline or its memory ceiling."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready = select.select([fd], [], [], min(left, MEMORY_POLL))[0]
            peak = peak_rss_bytes(proc.pid)
            self.peak = max(self.peak, peak)
            if self.memory_limit is not None and peak > self.memory_limit:
                self.close()
                raise WorkerError(f"worker exceeded the memory budget of {format_size(self.memory_limit)} "
                                  f"(resident {format_size(peak)}; killed)")
            if ready:
                return

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.loaded.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attnconf.adapters.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
        )
        return self.proc

    def log_tail(self, n: int = 2000) -> str:
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - n))
        return self.log.read().decode("utf-8", "replace")

    def _exchange(self, request: tuple[Any, ...]) -> Any:
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _write(proc.stdin, request)
            deadline = time.monotonic() + self.timeout
            self._await_reply(proc, deadline)
            reply = _read(proc.stdout.fileno(), deadline)
        except TimeoutError:
            self.close()
            raise WorkerError(f"worker timed out after {self.timeout:.0f} s (killed)") from None
        except (EOFError, BrokenPipeError, OSError):
            code = proc.wait()
            self.proc = None
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            raise WorkerError(f"worker process died ({how}); its last output:\n{self.log_tail()}") from None
        if reply[0] == "err":
            raise AdapterCallError(*reply[1:])
        return reply[1]

    def call(self, spec: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if spec not in self.loaded:
            self._exchange(("load", spec))
            self.loaded.add(spec)
        return self._exchange(("call", spec, method, args, kwargs))

    def call_beside(self, spec: str, helper: str, method: str, *args: Any) -> Any:
        """`helper(adapter).method(*args)` in the worker, `helper` ("module:Class") built once per adapter."""
        if spec not in self.loaded:
            self._exchange(("load", spec))
            self.loaded.add(spec)
        return self._exchange(("beside", spec, helper, method, args))

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


class WorkerPool:
    """Workers keyed by (process group, environment)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, memory_limit: int | None = None):
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.workers: dict[tuple[str, tuple[tuple[str, str], ...]], Worker] = {}

    def worker(self, group: str, env: dict[str, str]) -> Worker:
        key = (group, tuple(sorted(env.items())))
        if key not in self.workers:
            self.workers[key] = Worker(env, self.timeout, self.memory_limit)
        return self.workers[key]

    def peaks(self) -> dict[str, int]:
        """The largest resident memory seen per process group (bytes)."""
        out: dict[str, int] = {}
        for (group, _), w in self.workers.items():
            out[group] = max(out.get(group, 0), w.peak)
        return out

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        self.workers.clear()


class RemoteAdapter:
    """A proxy for an adapter running in a worker process."""

    def __init__(self, spec: str, cls: Any, pool: WorkerPool, group: str | None = None):
        t = traits(cls)
        self.spec = spec
        self.cls = cls
        self.name = cls.name
        self.capabilities = cls.capabilities
        self.framework, self.api, self.distributions = t.framework, t.api, t.distributions
        self.environment = t.env
        # `group` isolates an adapter that declares no process group (e.g. to survive its crash)
        self.process_group = group or t.process_group
        if not self.process_group:
            raise ValueError(f"adapter {self.name!r} declares no process_group and none was given: "
                             "a worker proxy needs a group (attnconf.adapters.placement names one)")
        self.expected_differences = list(t.expected_differences)
        self._worker = pool.worker(self.process_group, self.environment)

    def versions(self) -> dict[str, str]:
        return dict(self._worker.call(self.spec, "versions"))

    def resident_bytes(self) -> int:
        """Resident memory of this adapter's worker process now (0 before it starts)."""
        return self._worker.resident()

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or not callable(getattr(self.cls, method, None)):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._worker.call(self.spec, method, *args, **kwargs)

    def beside(self, helper: str) -> Beside:
        """A proxy for `helper(adapter)` ("module:Class") built in this adapter's worker, next to it."""
        return Beside(self._worker, self.spec, helper)

    def __repr__(self) -> str:
        return f"RemoteAdapter({self.name!r}, group={self.process_group!r})"


class Beside:
    """A helper object that lives in an adapter's worker process; its methods are called through the pipe
    (arguments and results are pickled frames: keep them plain data)."""

    def __init__(self, worker: Worker, spec: str, helper: str):
        self._worker, self._spec, self._helper = worker, spec, helper

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args: self._worker.call_beside(self._spec, self._helper, method, *args)


def _helper_class(path: str) -> Any:
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _serve() -> None:
    """The worker side: read requests from stdin, answer on the original stdout."""
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the framework prints goes to the log, not the protocol
    sys.stdout = sys.stderr
    from attnconf.adapters.registry import instantiate, load

    adapters: dict[str, Any] = {}
    helpers: dict[tuple[str, str], Any] = {}
    fd = sys.stdin.fileno()
    while True:
        try:
            request = _read(fd)
        except EOFError:
            return
        try:
            if request[0] == "load":
                adapters[request[1]] = instantiate(load(request[1]).obj)
                reply: tuple[Any, ...] = ("ok", None)
            elif request[0] == "beside":
                _, spec, helper, method, args = request
                if (spec, helper) not in helpers:
                    helpers[spec, helper] = _helper_class(helper)(adapters[spec])
                reply = ("ok", getattr(helpers[spec, helper], method)(*args))
            else:
                _, spec, method, args, kwargs = request
                reply = ("ok", getattr(adapters[spec], method)(*args, **kwargs))
        except Exception as err:  # reported to the parent, which re-raises it
            reply = ("err", type(err).__name__, str(err), traceback.format_exc())
        _write(proto, reply)


if __name__ == "__main__":
    _serve()
