"""The layout shows the architecture: phast's modules import each other without a cycle, the
queue (``supervisor``) and the budget (``governor``) meet only in ``jobs``, and the editor's
modules never import a backend.

Read from the source text, so imports inside functions and under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"phast": ROOT / "phast", "phast.backends": ROOT / "backends",
            "phast.kernels": ROOT / "kernels"}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = (path, path.name == "__init__.py")
    return found


def _imports() -> dict[str, set[str]]:
    """Module -> the phast modules it imports anywhere in its text."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                # "from . import x" imports the submodule x (its package is imported anyway)
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = subs or [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_no_import_cycle() -> None:
    edges = _imports()
    cycles = [m for m in edges if _reaches(edges, m, m)]
    assert cycles == [], f"modules on an import cycle: {sorted(cycles)}"


def test_supervisor_and_governor_meet_only_in_jobs() -> None:
    edges = _imports()
    assert not _reaches(edges, "phast.governor", "phast.supervisor")
    assert not _reaches(edges, "phast.supervisor", "phast.governor")
    assert "phast.jobs" in edges["phast.governor"] and "phast.jobs" in edges["phast.supervisor"]
    assert edges["phast.jobs"] == set()


def test_editor_modules_never_import_a_backend() -> None:
    """Backends run only in workers (loaded by spec); ``registry.load`` and the worker loop are
    the only phast modules that reach them, and they do it by name at run time."""
    edges = _imports()
    editor = ["phast.clip", "phast.session", "phast.tiers", "phast.supervisor", "phast.governor",
              "phast.builder", "phast.store", "phast.cli", "phast.probe"]
    for module in editor:
        reached = {m for m in edges if _reaches(edges, module, m)}
        backends = sorted(m for m in reached if m.startswith("phast.backends.")
                          and m != "phast.backends.base")
        assert backends == [], f"{module} reaches {backends}"
