"""Third-party backends, installed as separate distributions into a throw-away environment.

The worked example (``examples/phast-y4m``) must be discovered through its entry point, run
sandboxed and pass the conformance suite from its own tests. A distribution of deliberately
broken plugins (an import error, a probe that raises, a decoder that crashes, and a backend that
is merely not available here) must be reported clearly and affect nothing else.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from tests.plugin_env import PluginEnv, make_env

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "phast-y4m"

BROKEN: dict[str, str] = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "phast-broken-plugins"
        version = "0.1.0"

        [project.entry-points."phast.backends"]
        broken-import = "phast_broken_import:Backend"
        broken-probe = "phast_broken_plugins:ProbeRaises"
        broken-decode = "phast_broken_plugins:DecodeCrashes"
        not-here = "phast_broken_plugins:NotHere"

        [tool.setuptools]
        py-modules = ["phast_broken_import", "phast_broken_plugins"]
    """,
    "phast_broken_import.py": """
        import phast_sdk_that_is_not_installed  # the plugin's own dependency is missing
    """,
    "phast_broken_plugins.py": """
        import os

        from phast.backends.base import ProbeResult
        from phast.backends.software import SoftwareBackend


        class ProbeRaises(SoftwareBackend):
            name = "broken-probe"

            @classmethod
            def probe(cls):
                raise RuntimeError("probe exploded on purpose")


        class NotHere(SoftwareBackend):
            name = "not-here"

            @classmethod
            def probe(cls):
                return ProbeResult(False, "needs the FooCodec SDK: pip install foocodec")


        class DecodeCrashes(SoftwareBackend):
            name = "broken-decode"

            def decode(self, index, format, out):
                if index == 5:
                    os.abort()  # a native crash, on every attempt
                if index == 7:
                    raise ZeroDivisionError("a bug outside the contract")
                return super().decode(index, format, out)
    """,
}

#: Run inside the plugin environment: discovery, sandboxing and isolation of broken plugins.
SCRIPT = """
    import json, os, sys
    import numpy as np
    import phast
    from phast import registry
    from phast.testing import make_clip, reference_frames

    out = {"plugins": registry.plugins(), "me": os.getpid()}
    y4m, mp4 = make_clip("y4m_420", sys.argv[1]), make_clip("h264", sys.argv[1])
    pool = phast.WorkerPool(max_workers=1)

    with phast.open(y4m, backend="y4m", pool=pool) as clip:
        with clip.frame(5, format="native") as f:
            want = reference_frames(y4m, format="native")[5]
            out["y4m"] = {"backend": clip.backend, "worker": clip.worker_pid,
                          "exact": all(np.array_equal(np.asarray(g), w)
                                       for g, w in zip(f.planes, want)),
                          "sandbox": clip.sandbox.get("rlimits", "")}
    out["y4m"]["imported_here"] = "phast_y4m" in sys.modules

    for name in ("broken-import", "broken-probe", "not-here"):
        try:
            phast.open(mp4, backend=name, pool=pool).close()
            out[name] = ["opened", ""]
        except phast.PhastError as e:
            out[name] = [type(e).__name__, str(e)]

    ref = reference_frames(mp4)
    with phast.open(mp4, backend="broken-decode", pool=pool) as clip:
        got = {}
        for i in (4, 5, 6, 7, 8):
            try:
                got[i] = bool(np.array_equal(clip.frame(i).array, ref[i]))
            except phast.PhastError as e:
                got[i] = type(e).__name__
        out["broken-decode"] = got
    out["restarts"] = sum(w.restarts for w in pool.workers)

    with phast.open(mp4, backend="software", pool=pool) as clip:
        out["software"] = all(np.array_equal(clip.frame(i).array, ref[i]) for i in (0, 5, 7, 35))
    pool.shutdown()
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> PluginEnv:
    root = tmp_path_factory.mktemp("plugins")
    broken = root / "phast-broken-plugins"
    broken.mkdir()
    for name, text in BROKEN.items():
        (broken / name).write_text(textwrap.dedent(text).lstrip())
    return make_env(root, [EXAMPLE, broken])


def test_example_passes_the_conformance_suite_from_its_own_tests(plugin_env: PluginEnv,
                                                                  tmp_path: Path) -> None:
    project = plugin_env.sources["phast-y4m"]
    out = plugin_env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=project,
                         timeout=240, PHAST_CACHE_DIR=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    passed = re.search(r"(\d+) passed", out.stdout)
    assert passed and int(passed.group(1)) >= 50, out.stdout[-2000:]
    assert "skipped" not in out.stdout.splitlines()[-1], out.stdout[-2000:]


def test_plugins_are_discovered_sandboxed_and_isolated(plugin_env: PluginEnv,
                                                       tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = plugin_env.run(str(script), str(tmp_path), timeout=180,
                         PHAST_CACHE_DIR=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr[-4000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])

    assert seen["plugins"]["y4m"] == "phast_y4m:Y4MBackend"
    assert {"broken-import", "broken-probe", "broken-decode", "not-here"} <= set(seen["plugins"])
    y4m = seen["y4m"]
    assert y4m["backend"] == "y4m" and y4m["exact"] and y4m["worker"] != seen["me"]
    assert y4m["sandbox"].startswith("active") and not y4m["imported_here"]

    kind, message = seen["broken-import"]
    assert kind == "BackendUnavailable"
    assert "phast_broken_import" in message and "phast_sdk_that_is_not_installed" in message
    kind, message = seen["broken-probe"]
    assert kind == "BackendUnavailable" and "probe exploded on purpose" in message
    kind, message = seen["not-here"]
    assert kind == "BackendUnavailable" and "needs the FooCodec SDK" in message

    assert seen["broken-decode"] == {"4": True, "5": "FrameQuarantined", "6": True,
                                     "7": "FrameQuarantined", "8": True}
    assert seen["restarts"] == 4  # two per crashing frame; none for the unusable plugins
    assert seen["software"] is True


def test_phast_backends_reports_every_plugin(plugin_env: PluginEnv) -> None:
    out = plugin_env.run("-m", "phast", "backends", "--json", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    entries = {e["name"]: e for e in json.loads(out.stdout)}
    assert entries["software"]["available"] and entries["software"]["origin"] == "built-in"
    assert entries["y4m"]["available"] and entries["y4m"]["origin"] == "plugin"
    assert entries["broken-decode"]["available"]  # its probe is fine: it breaks later
    assert not entries["broken-import"]["available"]
    assert "phast_sdk_that_is_not_installed" in entries["broken-import"]["reason"]
    assert not entries["broken-probe"]["available"]
    assert "probe exploded on purpose" in entries["broken-probe"]["reason"]
    assert "pip install foocodec" in entries["not-here"]["reason"]

    text = plugin_env.run("-m", "phast", "backends", "--timeout", "60")
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines()[1:]}
    for name in ("broken-import", "broken-probe", "not-here"):
        assert "unavailable: " in lines[name], lines[name]
    assert lines["y4m"].rstrip().endswith(")") and "available" in lines["y4m"]


def test_no_plugins_switch(plugin_env: PluginEnv) -> None:
    code = "import phast.registry as r; print(sorted(r.available()))"
    on = plugin_env.run("-c", code)
    off = plugin_env.run("-c", code, PHAST_NO_PLUGINS="1")
    assert "'y4m'" in on.stdout and "'broken-import'" in on.stdout
    assert off.stdout.strip() == "['nvdec', 'software', 'vaapi']", off.stdout + off.stderr
