"""The worker process of the local function runner: ``python function_worker.py <arn> <fd>``.

Started by function_pool.Worker in the function's extract directory, with only the function's
environment; stdlib only, so nothing of msctl is imported into it. It imports the handler once
and serves one invocation at a time over the multiprocessing Connection on ``fd``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import signal
import sys
import time
import traceback
from decimal import Decimal
from multiprocessing.connection import Connection

ORPHAN_GRACE = 5.0  # a worker kills itself this long after its deadline
_request_id = ""


class _Context:
    def __init__(self, request_id: str, deadline: float, arn: str):
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = env["AWS_LAMBDA_FUNCTION_VERSION"]
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]  # a str in Lambda too
        self.log_group_name = env["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _json_default(value):
    if isinstance(value, Decimal):  # the Lambda runtime writes Decimals as numbers
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _setup_logging() -> None:
    class RequestId(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id
            return True

    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RequestId())
    logging.getLogger().handlers = [handler]


def _load_handler(spec: str):
    module_name, _, attr = spec.rpartition(".")
    dotted = module_name.replace("/", ".")
    # The handler setting comes from the emulator, which anyone on this machine can change:
    # only a module of the deployed code is imported, never another one on sys.path.
    base = os.path.join(os.getcwd(), *dotted.split("."))
    if not any(os.path.isfile(base + end) for end in (".py", f"{os.sep}__init__.py")):
        message = f"Unable to import module '{module_name}': no {dotted} in the deployed code"
        return None, ("Runtime.ImportModuleError", message)
    try:
        module = importlib.import_module(dotted)
    except Exception as exc:
        error = ("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
        return None, error
    func = getattr(module, attr, None)
    if not callable(func):
        return None, ("Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{module_name}'")  # fmt: skip
    return func, None


def _worker_main(arn: str, fd: int) -> None:
    global _request_id
    sys.path.insert(0, os.getcwd())  # LAMBDA_TASK_ROOT
    time.tzset()
    conn = Connection(fd)
    _setup_logging()
    func, init_error = _load_handler(os.environ["_HANDLER"])
    if init_error:
        print(f"[ERROR] {init_error[0]}: {init_error[1]}", file=sys.stderr)
    conn.send(("ready",))
    memory = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
    while True:
        try:
            request_id, event, deadline = conn.recv()
        except (EOFError, OSError):
            return
        _request_id = request_id
        if init_error:
            conn.send(("error", "RuntimeError", *init_error, init_error[1]))
            continue
        sys.stdout.write(f"START RequestId: {request_id} Version: $LATEST\n")
        started = time.perf_counter()
        # Backstop: if msctl dies mid-invocation nobody kills a stuck handler but SIGALRM.
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0) + ORPHAN_GRACE)
        try:
            result = func(event, _Context(request_id, deadline, arn))
            try:
                reply = ("ok", json.dumps(result, default=_json_default))
            except (TypeError, ValueError) as exc:
                message = f"Unable to marshal response: {exc}"
                reply = ("error", "RuntimeError", "Runtime.MarshalError", message, message)
        except Exception as exc:
            trace = traceback.format_exc()
            sys.stderr.write(f"[ERROR] {type(exc).__name__}: {exc}\n{trace}")
            reply = ("error", "Unhandled", type(exc).__name__, str(exc), trace)
        signal.setitimer(signal.ITIMER_REAL, 0)
        took = (time.perf_counter() - started) * 1000
        used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        sys.stdout.write(
            f"END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {took:.2f} ms"
            f"\tBilled Duration: {int(took) + 1} ms\tMemory Size: {memory} MB"
            f"\tMax Memory Used: {used} MB\n"
        )
        conn.send(reply)


if __name__ == "__main__":
    _worker_main(sys.argv[1], int(sys.argv[2]))
