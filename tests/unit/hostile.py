"""Attacker code that a process runs at startup if it gets the wrong environment: a
sitecustomize.py on PYTHONPATH, a .pth file in HOME's user site-packages, a library
LD_PRELOAD loads (built with cc, when there is one). Each writes a marker file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def plant(root: Path) -> tuple[dict[str, str], Path]:
    """The hostile variables, and the directory the markers would appear in."""
    markers = root / "markers"
    markers.mkdir(parents=True)
    code = root / "code"
    code.mkdir()
    (code / "sitecustomize.py").write_text(f"open({str(markers / 'pythonpath')!r}, 'w')\n")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = root / "home" / ".local" / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    (site / "evil.pth").write_text(f"import os; open({str(markers / 'home')!r}, 'w')\n")
    env = {
        "PYTHONPATH": str(code),
        "HOME": str(root / "home"),
        "BASH_ENV": str(code / "sitecustomize.py"),
        "LD_PRELOAD": str(root / "evil.so"),
    }
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        source = root / "evil.c"
        source.write_text(
            "#include <stdio.h>\n"
            "__attribute__((constructor)) static void evil(void) {\n"
            f'  FILE *f = fopen("{markers / "ld_preload"}", "w"); if (f) fclose(f);\n'
            "}\n"
        )
        subprocess.run([cc, "-shared", "-fPIC", "-o", env["LD_PRELOAD"], str(source)], check=True)
    return env, markers
