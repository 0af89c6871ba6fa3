"""gunicorn settings; every value can be overridden by the environment or the CLI."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8080")
# WEB_CONCURRENCY is gunicorn's conventional worker-count variable.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# Longer than the ALB's 60 s idle timeout, so the ALB closes idle connections
# first and never sends a request into one gunicorn is closing (502s).
keepalive = 75
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
# No runtime control socket (gunicorn >= 25 would create one under $HOME).
control_socket_disable = True
# Heartbeat files on tmpfs where there is a writable one (an overlay filesystem can stall
# workers); else in the temporary directory: on ECS the root filesystem is read-only and /tmp
# is the task's scratch volume.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
    worker_tmp_dir = "/dev/shm"
