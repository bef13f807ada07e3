"""Throw-away Python environments with plugin distributions installed, as a user would have them.

``make_env(directory, projects)`` creates a venv that sees the packages of the environment
running the tests (phast, numpy, PyAV, pytest, setuptools, wheel), copies each project folder
next to it (pip builds in the source tree; the repository stays clean) and ``pip install``\\s
them into it without dependencies. Nothing is downloaded when the build backend is usable here
without build isolation (setuptools >= 70.1, or setuptools with ``wheel``); otherwise pip builds
in isolation, fetching setuptools from the configured index.

"The environment running the tests" is usually itself a venv: ``--system-site-packages`` would
show the base interpreter's packages instead (a fresh one has setuptools but neither phast nor
``wheel``), so the new venv gets a ``.pth`` file that adds this environment's site directories,
``.pth`` files included (phast's editable install is one).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PluginEnv", "make_env"]


class PluginEnv:
    """A venv with plugins installed: its interpreter, and ``run`` for commands inside it."""

    def __init__(self, root: Path, sources: dict[str, Path]) -> None:
        self.root = root
        self.python = root / "bin" / "python"
        self.sources = sources  #: project name -> the installed copy of its folder

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PHAST_NO_PLUGINS")}
        env.update(extra)
        return env

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 120,
            **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=self.env(**extra),
                              capture_output=True, text=True, timeout=timeout)


def _isolation_needed() -> bool:
    """True when setuptools here cannot build a wheel by itself (old, and no ``wheel``)."""
    try:
        import setuptools
    except ImportError:
        return True
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None


def _see_these_packages(root: Path) -> None:
    """Make the venv at ``root`` import what this interpreter imports (see the module doc)."""
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in dirs)
    (Path(purelib) / "zz_phast_test_env.pth").write_text(lines)


def make_env(directory: Path, projects: Sequence[Path]) -> PluginEnv:
    root = directory / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    _see_these_packages(root)
    sources = {}
    for project in projects:
        copy = directory / "src" / project.name
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", ".pytest_cache"))
        sources[project.name] = copy
    pip = [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
           "--quiet", "--no-deps", "--disable-pip-version-check"]
    if not _isolation_needed():
        pip.append("--no-build-isolation")
    out = subprocess.run([*pip, *map(str, sources.values())], capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"pip install failed ({' '.join(pip)}):\n{out.stdout}\n{out.stderr}")
    return PluginEnv(root, sources)
