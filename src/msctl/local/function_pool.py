"""The worker processes of one function version: a pool started on demand, and the parent's
end of each worker (start it, send an invocation, read the reply or how it died)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from multiprocessing import Pipe

INIT_TIMEOUT = 30.0  # interpreter start + handler import (Lambda allows 10 s of init)
KILL_WAIT = 5.0


class FunctionError(Exception):
    """kind: "Unhandled" (the handler raised), "Timeout", or "RuntimeError"."""

    def __init__(self, kind: str, message: str, error_type: str | None = None, request_id=None):
        super().__init__(message)
        self.kind, self.message = kind, message
        self.error_type = error_type or kind
        self.request_id = request_id


class Retired(Exception):
    """The pool was replaced (redeployed function) or closed: take the current one."""


class Pool:
    """Up to ``size`` workers of one function version; started on demand."""

    def __init__(self, spec, command, root, env, log, size):
        self.spec, self.command, self.root, self.env, self.log = spec, command, root, env, log
        self.size, self.started, self.closed = size, 0, False
        self.idle: list[Worker] = []
        self.workers: set[Worker] = set()
        self.cond = threading.Condition()
        self.checking = threading.Lock()
        self.next_check = 0.0  # when the runner next asks if the function changed

    def acquire(self) -> Worker:
        with self.cond:
            while not self.idle and self.started >= self.size and not self.closed:
                self.cond.wait()
            if self.closed:
                raise Retired
            if self.idle:
                return self.idle.pop()  # the most recently used: warm
            self.started += 1
        return self._start()

    def release(self, worker: Worker, healthy: bool) -> None:
        if healthy:
            with self.cond:
                if not self.closed:
                    self.idle.append(worker)
                    self.cond.notify()
                    return
        worker.stop()
        with self.cond:
            self.workers.discard(worker)
            self.started -= 1
            replace = not self.closed
            self.cond.notify()
        if replace:  # start the fresh worker now, so it is warm for the next call
            with self.cond:
                self.started += 1
            with contextlib.suppress(FunctionError, Retired):
                self.release(self._start(), True)

    def fill(self) -> None:
        with self.cond:
            missing = 0 if self.closed else self.size - self.started
            self.started += missing
        with contextlib.suppress(Retired):
            for _ in range(missing):
                self.release(self._start(), True)

    def _start(self) -> Worker:
        try:
            worker = Worker(self)
        except BaseException:
            with self.cond:
                self.started -= 1
                self.cond.notify()
            raise
        with self.cond:
            if not self.closed:
                self.workers.add(worker)
                return worker
            self.started -= 1
        worker.stop()  # closed while it started: close() could not see it
        raise Retired

    def close(self, kill_busy: bool = False) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
            busy = [w for w in self.workers if w not in idle] if kill_busy else []
            self.cond.notify_all()
        for worker in idle:
            worker.stop()
        for worker in busy:  # the invoking thread sees EOF, then stop()s it itself
            worker.kill()


class Worker:
    def __init__(self, pool: Pool):
        self.conn, child = Pipe()
        env = dict(pool.env, AWS_LAMBDA_LOG_STREAM_NAME=_log_stream())
        try:
            with open(pool.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [*pool.command, str(child.fileno())],
                    cwd=pool.root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(child.fileno(),),
                    start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
                )
        except OSError as exc:
            self.conn.close()
            raise FunctionError("RuntimeError", f"cannot start a worker: {exc}") from None
        finally:
            child.close()
        self.ready = False

    def call(self, request_id: str, event, limit: float) -> tuple:
        if not self.ready:
            if not self.conn.poll(INIT_TIMEOUT):
                raise FunctionError("Timeout", f"Init timed out after {INIT_TIMEOUT:.2f} seconds")
            self._recv()
            self.ready = True
        try:
            self.conn.send((request_id, event, time.time() + limit))
        except OSError:
            self._recv()  # raises the exit error
        if not self.conn.poll(limit):
            raise FunctionError("Timeout", f"Task timed out after {limit:.2f} seconds")
        return self._recv()

    def _recv(self) -> tuple:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.proc.wait(KILL_WAIT)
            except subprocess.TimeoutExpired:
                code = None
            message = f"Runtime exited with error: {_exit_status(code)}"
            raise FunctionError("RuntimeError", message, "Runtime.ExitError") from None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(KILL_WAIT)

    def stop(self) -> None:
        self.kill()
        self.conn.close()


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal: {signal.Signals(-code).name}"
        return f"signal: {-code}"
    return f"exit status {code}"


def _log_stream() -> str:
    return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
