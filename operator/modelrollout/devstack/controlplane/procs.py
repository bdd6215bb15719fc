"""Child processes of the local environment: start, wait until ready, stop by PID.

Each component runs in its own session (so its process group id is its PID) with stdout and
stderr in a log file. Stopping sends SIGTERM to the group, then SIGKILL after a grace period.
Processes started for a test session are registered for an ``atexit`` clean-up and, on Linux,
ask the kernel to kill them if the Python process dies (``PR_SET_PDEATHSIG``), so a crashed
pytest leaves nothing behind. Processes started by ``modelrollout localenv up`` are detached.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

from modelrollout.devstack.controlplane.errors import ComponentError

_LIVE: dict[int, ManagedProcess] = {}
_LIVE_LOCK = threading.Lock()


def tail(path: Path, lines: int = 30, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ports_closed(ports: Sequence[int], timeout: float = 10.0) -> list[int]:
    """Wait until nothing listens on ``ports``; return those still open after ``timeout``."""
    deadline = time.monotonic() + timeout
    remaining = list(ports)
    while remaining:
        remaining = [p for p in remaining if port_open(p)]
        if not remaining or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return remaining


def _load_prctl() -> Callable[..., int] | None:
    # Resolved once, in the parent: the child must not dlopen() between fork and exec.
    if sys.platform != "linux":
        return None
    try:
        return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def pid_runs(pid: int, executable: str) -> bool:
    """Whether ``pid`` is alive and runs ``executable`` (guards against reused PIDs)."""
    if not pid_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return sys.platform != "linux"  # no /proc: trust the PID
    return os.path.basename(argv0) == os.path.basename(executable)


def kill_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                # The leader is gone; make sure no member of its group survives it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                return
            time.sleep(0.05)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError as exc:  # pragma: no cover - defensive
        if exc.errno != errno.ECHILD:
            raise


class ManagedProcess:
    """One component process with its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        detached: bool = False,
        ports: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.detached = detached
        self.ports = list(ports)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc.pid

    def _pdeathsig(self) -> bool:
        return (not self.detached and _PRCTL is not None
                and threading.current_thread() is threading.main_thread())

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                    # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only ask for it
                    # from the main thread, which lives as long as the process.
                    preexec_fn=_die_with_parent if self._pdeathsig() else None,
                )
            except OSError as exc:
                raise ComponentError(self.name, f"could not start {self.argv[0]}: {exc}", "") from exc
        if not self.detached:
            with _LIVE_LOCK:
                _LIVE[self.pid] = self

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def check_running(self, what: str = "while starting") -> None:
        """Raise :class:`ComponentError` with the log tail if the process has exited."""
        code = self.returncode()
        if code is not None:
            raise ComponentError(self.name, f"exited with code {code} {what}", self.log_tail())

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it is true; fail fast with the log tail if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            try:
                if ready():
                    # A port squatter may answer for us: make sure we are still the one running.
                    time.sleep(0.05)
                    self.check_running()
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise ComponentError(self.name, f"not {what} after {timeout:.0f} s", self.log_tail())
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            kill_group(self._proc.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        with _LIVE_LOCK:
            _LIVE.pop(self._proc.pid, None)


def stop_all_registered() -> None:
    """Stop every non-detached process this Python process started (atexit hook)."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            proc.stop(timeout=5)


atexit.register(stop_all_registered)
