"""A supervisor for child processes, for ``surgical run``: signals, start, watch, stop.

The children run in their own process group, so a terminal's Ctrl-C reaches only the
supervisor, which sends each child exactly one SIGTERM (the API and the dashboard stop at once,
workers after their current trial) and waits. A second Ctrl-C/SIGTERM repeats the SIGTERM (a
worker's second signal makes it stop now) and kills whatever still runs a few seconds later. A
child that exits on its own is reported (``SupervisorError``) and the others are stopped.
"""

from __future__ import annotations

import errno
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import httpx

STOP_GRACE_S = 30.0   # workers finish their trial within this, or are killed
HURRY_GRACE_S = 5.0   # after a second signal


class SupervisorError(Exception):
    """Why the supervised program cannot go on, in one line (no traceback is shown)."""


def check_port_free(host: str, port: int, option: str) -> None:
    """Fail early, in one line, when something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn does: a port in TIME_WAIT is free; one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise SupervisorError(
                    f"port {port} on {host} is already in use (another `surgical run`?); "
                    f"choose another with {option}"
                ) from None
            raise SupervisorError(f"cannot listen on {host}:{port} ({option}): {error.strerror}") from None


class Interrupts:
    """SIGINT/SIGTERM handling for the supervisor (main thread only).

    The first signal raises KeyboardInterrupt wherever the main thread is (building the model,
    waiting for the API, supervising), which unwinds to the caller's shutdown (``Children.stop`` in a ``finally``). Once
    ``stopping`` is set, signals only set ``hurry``. Inside ``deferred()`` (between starting
    a child and recording it) a signal is held back until the block ends, so no child escapes.
    """

    def __init__(self) -> None:
        self.stopping = False
        self.hurry = threading.Event()
        self._deferring = False
        self._pending = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # embedded in another program's thread: its signals stay its own
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            self.hurry.set()
        elif self._deferring:
            self._pending = True
        else:
            self.stopping = True
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending and not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class Children:
    interrupts: Interrupts
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str, env: dict[str, str]) -> Child:
        with self.interrupts.deferred():
            process = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", *args], env=env,
                start_new_session=True,  # Ctrl-C in the terminal reaches the supervisor only
            )
            child = Child(name, process)
            self.children.append(child)
        return child

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def _signal_alive(self, signum: int) -> None:
        for child in self.children:
            if child.process.poll() is None:
                with suppress(ProcessLookupError):
                    child.process.send_signal(signum)

    def stop(self, say: Callable[[str], None]) -> None:
        """SIGTERM every child and wait; a second signal (``hurry``) shortens the wait."""
        alive = [c for c in self.children if c.process.poll() is None]
        if not alive:
            return
        say("stopping: workers finish their current trial (Ctrl-C again to stop them now) ...")
        self._signal_alive(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        hurried = False
        while any(c.process.poll() is None for c in self.children) and time.monotonic() < deadline:
            if self.interrupts.hurry.is_set() and not hurried:
                hurried = True
                self._signal_alive(signal.SIGTERM)
                deadline = min(deadline, time.monotonic() + HURRY_GRACE_S)
            time.sleep(0.1)
        for child in self.children:
            if child.process.poll() is None:
                say(f"killing the {child.name} process (pid {child.process.pid})")
                child.process.kill()
            child.process.wait()


def wait_http(url: str, what: str, children: Children, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200; fail if a child exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_children(children)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SupervisorError(f"the {what} at {url} did not answer within {timeout:.0f} s")


def _check_children(children: Children) -> None:
    exited = children.first_exited()
    if exited is not None:
        raise SupervisorError(
            f"the {exited.name} process exited with status {exited.process.returncode} "
            "(its output is above); stopping the others"
        )


def supervise(children: Children, until: Callable[[], bool] | None = None) -> None:
    """Wait until ``until()`` (forever when None) while every child is alive."""
    while until is None or not until():
        _check_children(children)
        time.sleep(0.25)


class Background(threading.Thread):
    """Runs ``target`` off the main thread, so the main thread keeps watching children and
    receiving signals; ``result()`` returns its value or raises its exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self._value: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._value = self._target_fn()
        except BaseException as error:  # re-raised in the main thread
            self._error = error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value
