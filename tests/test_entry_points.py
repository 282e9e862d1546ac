"""Every ``python -m scratchnet.X`` starts clean: no warning on stderr, not even runpy's "found in
sys.modules after import of package" (a package __init__ that imports the module -m is about to run)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scratchnet"


def entry_points():
    """scratchnet.X for every package with a __main__.py and every module with a __main__ block."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            names.append(".".join(parts[:-1]))
        elif parts[-1] != "__init__" and 'if __name__ == "__main__"' in path.read_text():
            names.append(".".join(parts))
    return names


def test_the_tools_are_found():
    assert {"scratchnet.train", "scratchnet.summary", "scratchnet.study"} <= set(entry_points())


@pytest.mark.parametrize("name", entry_points())
def test_help_starts_clean(name):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-W", "error", "-m", name, "--help"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("usage: ")
