"""The schemes package as a whole: importing it loads every module of it (each registers its
scheme, operations, handlers and extensions), so a new scheme is its module and one more name
on the package's import line (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mltrain.schemes

PACKAGE = Path(mltrain.schemes.__file__).parent
LOADED = (
    "import sys, mltrain.schemes; "
    "print(' '.join(m for m in sys.modules if m.startswith('mltrain.schemes.')))"
)


def test_importing_the_package_loads_every_scheme_module():
    """In a fresh process: a module under mltrain/schemes/ that nothing imports would register
    nothing, and its scheme would be an unknown coarsening.scheme."""
    modules = {f"mltrain.schemes.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    out = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True, check=True)
    assert modules <= set(out.stdout.split())
