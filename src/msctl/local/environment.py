"""Which of a function's or a task definition's variables the local runners pass on.

The emulator is unauthenticated, so anyone who can reach its loopback port can set them;
the Lambda handlers and the ECS services run here as processes of the msctl user.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Container

logger = logging.getLogger("msctl.local")

# An allow-list shape, not a list of bad names: a lab variable looks like USERS_TABLE
# (Lambda's own rule for a key: a letter, then letters, digits and "_"), which already
# refuses shell function exports (BASH_FUNC_x%%), "_"-prefixed runtime internals
# (_PYTHON_SYSCONFIGDATA_NAME, _JAVA_OPTIONS) and any name with "=" or NUL. From that shape
# what makes an interpreter, the loader, libc, a shell or a library load other code or trust
# other keys is taken out, whole families by prefix (a new PYTHON* is refused too), and so is
# what the runners set themselves: the AWS SDK's setup points at the emulator with throwaway
# credentials (only the X-Ray SDK's settings pass).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_REFUSED_PREFIXES = (
    "PYTHON", "PERL", "RUBY", "NODE_", "JAVA_", "JDK_",  # interpreters
    "COV_CORE_", "COVERAGE_",  # startup hooks (.pth files) of installed packages
    "LD_", "DYLD_", "GLIBC_", "MALLOC_",  # the dynamic loader and libc
    "BASH_", "SSL_", "OPENSSL_", "PG", "KRB5",  # shells, TLS, libpq, Kerberos
    "AWS_", "LAMBDA_",  # the runners' own: where the code and the emulator are
)  # fmt: skip
_REFUSED_NAMES = frozenset(
    {
        # glibc's list of variables unsafe for setuid programs (besides LD_* and MALLOC_*)
        "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "NIS_PATH",
        "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR", "TMPDIR",
        "ENV", "BASHOPTS", "SHELLOPTS", "PS4", "IFS", "CLASSPATH", "PATH", "HOME",
        "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "GUNICORN_CMD_ARGS",  # gunicorn's options: its config file is Python
    }
)  # fmt: skip
_ALLOWED_PREFIXES = ("AWS_XRAY_",)


def allowed(name) -> bool:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.upper() in _REFUSED_NAMES:
        return False
    upper = name.upper()
    return upper.startswith(_ALLOWED_PREFIXES) or not upper.startswith(_REFUSED_PREFIXES)


def safe_environment(variables: dict, owner: str, replaced: Container[str] = ()) -> dict:
    """The variables that may be passed on. A refused one is logged by name (never its
    value) and skipped; those in ``replaced`` are set by the runner itself, so they are
    dropped without a word."""
    passed, refused = {}, []
    for name, value in variables.items():
        if name in replaced:
            continue
        if allowed(name) and isinstance(value, str) and "\0" not in value:
            passed[name] = value
        else:
            refused.append(repr(name))
    if refused:
        logger.warning(
            "%s: not passing %s to the local process (variables that change how code is "
            "loaded, or that the runner sets, are refused)",
            owner,
            ", ".join(refused),
        )
    return passed
