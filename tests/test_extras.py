"""The optional extras: pyproject.toml names them, gpuaccel._extras describes the same ones,
`all` holds every other, and each "missing optional package" message names its extra
(the plots one: tests/test_bench.py)."""
import os
import re
import sys

import pytest

from gpuaccel import _extras, image_folder, peers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject_extras():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def test_pyproject_and_the_module_name_the_same_extras():
    extras = pyproject_extras()
    assert set(extras) == set(_extras.EXTRAS)
    (everything,) = extras["all"]
    named = set(re.fullmatch(r"gpuaccel\[(.*)\]", everything).group(1).split(","))
    assert named == set(extras) - {"all"}
    assert "matplotlib" in extras["plots"] and "pillow" in extras["images"]
    assert {"tensorflow-cpu", "torch"} <= set(extras["peers"])


def test_hint_names_the_extra_and_the_packages():
    assert _extras.hint("plots", "matplotlib") == 'pip install "gpuaccel[plots]" (or: pip install matplotlib)'
    with pytest.raises(ValueError, match="unknown extra"):
        _extras.hint("nope", "x")


def test_missing_pillow_names_the_images_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=re.escape('gpuaccel[images]')):
        image_folder._pil()


def test_missing_peer_framework_names_the_peers_extra(monkeypatch):
    real = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "tensorflow") else real(name, *a))
    reason = peers._check("torch")
    assert "gpuaccel[peers]" in reason and "make peers" in reason


# The study's tools (gpuaccel.study, issue 17 item 1): the library never imports them, and
# they import each other in one direction only at module level.
def _modules_after(code):
    import json
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = subprocess.run([sys.executable, "-c", code + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_library_never_imports_the_study():
    mods = _modules_after("import gpuaccel, gpuaccel.models, gpuaccel.layers, gpuaccel.datasets, gpuaccel.info; "
                          "gpuaccel.info.info()")
    assert "gpuaccel.study" not in mods and not any(m.startswith("gpuaccel.study.") for m in mods)


@pytest.mark.parametrize("module, not_imported", [
    ("gpuaccel.study.peers", "gpuaccel.study.bench"),     # peers -> report only
    ("gpuaccel.study.plots", "gpuaccel.study.bench"),     # plots -> report only
    ("gpuaccel.study.compare", "gpuaccel.study.bench"),
    ("gpuaccel.study.bench", "gpuaccel.study.peers"),     # bench imports peers only when they run
])
def test_study_modules_have_no_import_cycle(module, not_imported):
    assert not_imported not in _modules_after(f"import {module}")


def test_old_names_are_the_study_modules():
    import importlib

    for name in ("bench", "peers", "plots", "compare", "dist_bench"):
        assert importlib.import_module(f"gpuaccel.{name}") is importlib.import_module(f"gpuaccel.study.{name}")
