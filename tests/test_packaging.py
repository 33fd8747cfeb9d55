"""What `pip install vault-agent` gets: the built wheel holds every file the packages need, not just
the .py files (an editable install hides a missing stylesheet; a wheel without tui/app.tcss gives a
TUI that cannot start)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("vault_agent", "tui")


def package_files() -> set[str]:
    out = set()
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                out.add(path.relative_to(REPO).as_posix())
    return out


def test_the_wheel_holds_every_package_file(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md", *PACKAGES):
        item = REPO / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(item, src / name)
    out = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--quiet", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("vault_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "tui/app.tcss" in names
    missing = sorted(package_files() - names)
    assert not missing, f"not in the wheel: {missing}"
