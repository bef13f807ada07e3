"""Registry: entry-point discovery from installed metadata, precedence, and typed load errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import phast
from phast import errors, registry
from phast.backends.base import Backend
from phast.errors import BackendUnavailable, InvalidArgument, MissingDependency


def _install_metadata(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """What pip leaves behind for a distribution: a ``.dist-info`` with its entry points."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {spec}\n" for name, spec in entry_points.items())
    (info / "entry_points.txt").write_text(f"[phast.backends]\n{lines}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(registry.NO_PLUGINS_ENV, raising=False)
    d = tmp_path / "site"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    return d


def test_entry_points_are_discovered_without_importing(site: Path) -> None:
    _install_metadata(site, "phast-fake", {"fake": "phast_fake_never_imported:Backend"})
    assert registry.plugins()["fake"] == "phast_fake_never_imported:Backend"
    entry = registry.entries()["fake"]
    assert (entry.origin, entry.distribution, entry.module) == (
        "plugin", "phast-fake", "phast_fake_never_imported")
    assert registry.resolve("fake") == [("fake", "phast_fake_never_imported:Backend")]
    assert "phast_fake_never_imported" not in sys.modules
    assert registry.resolve("auto") == [(n, registry.BUILTIN[n]) for n in registry.AUTO_ORDER]


def test_precedence_builtin_then_registered_then_plugin(site: Path) -> None:
    _install_metadata(site, "phast-usurper", {"software": "evil:Backend", "mine": "a:B"})
    _install_metadata(site, "phast-second", {"mine": "c:D"})  # same name: the first one wins
    registry.register("mine", "tests.crashy_backend:CrashyBackend")
    try:
        table = registry.entries()
        assert table["software"].spec == registry.BUILTIN["software"]
        assert table["software"].origin == "built-in"
        assert table["mine"].origin == "registered"
    finally:
        registry.unregister("mine")
    assert registry.available()["mine"] in ("a:B", "c:D")


@pytest.mark.parametrize(("value", "disabled"), [("1", True), ("yes", True), ("0", False),
                                                 ("", False)])
def test_no_plugins_switch(site: Path, monkeypatch: pytest.MonkeyPatch, value: str,
                           disabled: bool) -> None:
    _install_metadata(site, "phast-fake", {"fake": "m:C"})
    monkeypatch.setenv(registry.NO_PLUGINS_ENV, value)
    assert ("fake" not in registry.available()) is disabled
    assert "software" in registry.available()


@pytest.mark.parametrize(("name", "spec"), [("auto", "a:B"), ("", "a:B"), ("x y", "a:B"),
                                            ("ok", "no_colon"), ("ok", "a:B:C"), ("ok", ":B")])
def test_register_checks_its_arguments(name: str, spec: str) -> None:
    with pytest.raises(InvalidArgument):  # a PhastError, and a ValueError
        registry.register(name, spec)


def test_slot_too_small_is_a_phast_error() -> None:
    """A backend's SlotTooSmall is inside the promise (``except PhastError`` catches it) and is
    the same class whether imported from the contract or from the errors module."""
    from phast.backends.base import SlotTooSmall

    assert SlotTooSmall is errors.SlotTooSmall
    assert issubclass(SlotTooSmall, errors.PhastError) and SlotTooSmall(10).needed == 10


def test_import_phast_survives_broken_plugins(tmp_path: Path) -> None:
    """Broken metadata and broken modules: ``import phast`` and other backends are unaffected."""
    site = tmp_path / "site"
    _install_metadata(site, "phast-broken", {"broken": "phast_broken_mod:Backend",
                                             "malformed": "not a spec at all"})
    (site / "phast_broken_mod.py").write_text("raise RuntimeError('import-time crash')\n")
    code = textwrap.dedent("""
        import sys, phast
        from phast import registry
        print(sorted(registry.available()))
        print("phast_broken_mod" in sys.modules)
        print(registry.resolve("software"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    names, imported, software = out.stdout.splitlines()
    assert "'broken'" in names and "'malformed'" in names and "'software'" in names
    assert imported == "False" and "SoftwareBackend" in software


# -- load(): what workers and test suites call ----------------------------------------------------

MODULES = {
    "phast_t_raises": "raise RuntimeError('import-time crash')\n",
    "phast_t_needs": ("from phast.errors import MissingDependency\n"
                      "raise MissingDependency('needs foo: pip install \"phast-t[foo]\"')\n"),
    "phast_t_ok": textwrap.dedent("""
        from phast.backends.base import ProbeResult
        from phast.backends.software import SoftwareBackend

        class NotABackend:
            pass

        class Unavailable(SoftwareBackend):
            @classmethod
            def probe(cls):
                return ProbeResult(False, "no device: install the driver")

        class ProbeRaises(SoftwareBackend):
            @classmethod
            def probe(cls):
                raise OSError("probe blew up")

        class Fine(SoftwareBackend):
            name = "fine"
    """),
}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(("spec", "error", "words"), [
    ("phast_t_missing_module:Backend", BackendUnavailable,
     ["phast_t_missing_module", "ModuleNotFoundError"]),
    ("phast_t_raises:Backend", BackendUnavailable, ["phast_t_raises", "import-time crash"]),
    ("phast_t_needs:Backend", MissingDependency, ["pip install"]),
    ("phast_t_ok:Missing", BackendUnavailable, ["has no 'Missing'"]),
    ("phast_t_ok:NotABackend", BackendUnavailable, ["not a phast.backends.base.Backend"]),
    ("not a spec", BackendUnavailable, ["not 'module:Class'"]),
    ("phast_t_ok:Unavailable", BackendUnavailable, ["no device: install the driver"]),
    ("phast_t_ok:ProbeRaises", BackendUnavailable, ["probe raised OSError: probe blew up"]),
])
def test_load_errors_are_typed_and_name_the_module(modules: Path, spec: str,
                                                    error: type[Exception],
                                                    words: list[str]) -> None:
    with pytest.raises(error) as info:
        registry.load(spec, probe=True)
    for word in words:
        assert word in str(info.value)


def test_load_returns_the_class(modules: Path) -> None:
    cls = registry.load("phast_t_ok:Fine", probe=True)
    assert issubclass(cls, Backend) and cls.name == "fine"
    assert registry.load("phast_t_ok:Unavailable") is not None  # probe only when asked


def test_open_with_unusable_backends_is_typed_and_harmless(modules: Path, make, cache_dir,
                                                            ) -> None:
    """Through a worker: typed errors, no worker crash, and the pool serves others after."""
    pool = phast.WorkerPool(max_workers=1)  # after syspath_prepend: workers see the modules
    clip = make("h264_bpyramid_longgop")
    try:
        for name, spec, words in [
            ("t-missing", "phast_t_missing_module:Backend", "phast_t_missing_module"),
            ("t-raises", "phast_t_raises:Backend", "import-time crash"),
            ("t-probe", "phast_t_ok:ProbeRaises", "probe blew up"),
            ("t-unavailable", "phast_t_ok:Unavailable", "install the driver"),
        ]:
            registry.register(name, spec)
            try:
                with pytest.raises(BackendUnavailable, match=words):
                    phast.open(clip, backend=name, pool=pool, cache_dir=cache_dir)
            finally:
                registry.unregister(name)
        assert pool.workers[0].restarts == 0
        with phast.open(clip, pool=pool, cache_dir=cache_dir) as c:
            assert c.frame(3).array.shape == (96, 160, 3)
    finally:
        pool.shutdown()
