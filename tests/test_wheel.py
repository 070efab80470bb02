"""The wheel as a new user gets it (issue 17 item 1): build a wheel of this source tree,
install it into a fresh virtual environment, and run the package's commands there, away
from the checkout. Everything the commands use must ship in the wheel: the study's tools
(gpuaccel.study) and the peer models (gpuaccel.study.peer_models).

No network: the wheel is built with --no-build-isolation (setuptools, wheel and NumPy of
this Python) and GPUACCEL_SKIP_CUDA=1 GPUACCEL_SKIP_MPI=1 (the C extension only), and the
venv sees this Python's site-packages for NumPy (--system-site-packages). A gpuaccel
installed there (an editable install of another checkout, say) must not be what runs: the
test checks that gpuaccel is imported from the venv's own site-packages. It runs no CUDA
code (GPUACCEL_TESTS=cuda deselects it) and `make test-asan` leaves it out.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_LIMIT_S = int(os.environ.get("GPUACCEL_WHEEL_BUILD_LIMIT_S", "900"))
PEERS_HINT = 'pip install "gpuaccel[peers]"'


def _copy_source(dest):
    """The files a wheel is built from, without this checkout's build outputs."""
    skip = shutil.ignore_patterns("*.so", "*.o", "__pycache__", "build", "*.egg-info", ".ipynb_checkpoints")
    os.makedirs(dest)
    for name in ("csrc", "gpuaccel"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(dest, name), ignore=skip)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), dest)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "GPUACCEL_PEERS_DIR",
                                                              "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, a cwd outside the checkout, its site-packages)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src, wheels, env_dir, cwd = tmp / "src", tmp / "wheels", tmp / "venv", tmp / "cwd"
    _copy_source(str(src))
    cwd.mkdir()
    t0 = time.perf_counter()
    try:
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                "-w", str(wheels), str(src)], capture_output=True, text=True, cwd=str(cwd),
                               env=_clean_env(GPUACCEL_SKIP_CUDA="1", GPUACCEL_SKIP_MPI="1"), timeout=BUILD_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"building the wheel took over {BUILD_LIMIT_S} s (GPUACCEL_WHEEL_BUILD_LIMIT_S)")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"wheel built in {time.perf_counter() - t0:.0f} s")
    (wheel,) = list(wheels.glob("gpuaccel-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env_dir)], check=True,
                   cwd=str(cwd), env=_clean_env())
    py = str(env_dir / "bin" / "python")
    inst = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
                           str(wheel)], capture_output=True, text=True, cwd=str(cwd), env=_clean_env())
    assert inst.returncode == 0, inst.stdout[-3000:] + inst.stderr[-3000:]
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, cwd=str(cwd), env=_clean_env()).stdout.strip()
    return py, str(cwd), site


def _run(venv, *args, timeout=600):
    py, cwd, _ = venv
    return subprocess.run([py, *args], capture_output=True, text=True, cwd=cwd, env=_clean_env(), timeout=timeout)


def test_installed_package_is_the_wheel_with_study_and_peer_models(venv):
    _, _, site = venv
    code = ("import importlib.util, json, sys, gpuaccel; "
            "study = 'gpuaccel.study' in sys.modules; "
            "specs = {m: getattr(importlib.util.find_spec(m), 'origin', None) for m in "
            "('gpuaccel.study.bench', 'gpuaccel.study.peers', 'gpuaccel.study.report', "
            "'gpuaccel.study.peer_models.keras_ref', 'gpuaccel.study.peer_models.torch_ref')}; "
            "print(json.dumps({'file': gpuaccel.__file__, 'study_on_import': study, 'specs': specs}))")
    r = _run(venv, "-c", code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(site + os.sep), f"gpuaccel came from {out['file']}, not the venv's {site}"
    assert not out["file"].startswith(ROOT + os.sep)
    assert out["study_on_import"] is False  # the library never imports the study
    for module, origin in out["specs"].items():
        assert origin and origin.startswith(site + os.sep), f"{module}: {origin}"


def test_info_runs_from_the_wheel(venv):
    r = _run(venv, "-m", "gpuaccel.info")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "version" in r.stdout and "0.1.0" in r.stdout


def test_bench_peers_runs_from_the_wheel(venv, tmp_path):
    """`python -m gpuaccel.bench --peers` finds both peer models in the installed package;
    each peer then trains (its framework present) or is reported missing with the extra."""
    _, _, site = venv
    data = _run(venv, "-c", "import gpuaccel.study.bench as b; b.load_fashion(256, 64)", timeout=300)
    if data.returncode != 0:
        pytest.skip(f"no Fashion-MNIST here (offline, no dataset-fashion-mnist): {data.stderr.strip()[-300:]}")
    out = tmp_path / "out"
    r = _run(venv, "-m", "gpuaccel.bench", "--peers", "--device", "cpu", "--epochs", "1", "--limit", "256",
             "--test-limit", "64", "--no-sweep", "--no-plots", "--quiet", "--out", str(out))
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["devices"][0]["error"] is None
    peers = {p["device"]: p for p in report["peers"]}
    assert set(peers) == {"keras-cpu", "torch-cpu"}
    for device, p in peers.items():
        if p["error"] is None:
            assert p["summary"]["epochs"] == 1
        else:
            assert PEERS_HINT in p["error"], f"{device}: {p['error']}"
            assert "not found" not in p["error"], f"{device}: the peer model is missing from the wheel: {p['error']}"
    avail = _run(venv, "-c", "import json, gpuaccel.peers as p; print(json.dumps({k: (v is True, str(v)) "
                 "for k, v in p.available().items()}))")
    assert avail.returncode == 0, avail.stderr
    for name, (ok, why) in json.loads(avail.stdout.strip().splitlines()[-1]).items():
        assert ok or PEERS_HINT in why, f"{name}: {why}"
