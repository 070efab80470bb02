"""Peers: the reference CNN in Keras (tensorflow-cpu) and PyTorch, trained like gpuaccel's.

    import gpuaccel.study.peers as peers   # or gpuaccel.peers, the same module
    peers.available()            # {'keras': True, 'torch': Unavailable('torch is not installed ...')}
    r = peers.run('torch', data, epochs=1, batch_size=128, seed=0, threads=2)
    r['device'], r['epochs'], r['summary'], r['error']   # shaped like gpuaccel.bench.train()

The models are the modules ``gpuaccel.study.peer_models.keras_ref`` and ``.torch_ref``
(they ship in the wheel; DESIGN.md section 3 and issue 4: same model, data, batch, optimizer and initialisation
scheme; how each is timed is written at the top of those files). They are imported by module
name (``$GPUACCEL_PEERS_DIR``, a folder, overrides where). TensorFlow and torch are imported
only when a peer runs, and a missing framework gives an error result, never an exception:
``make peers`` installs both.

As a command, a side-by-side comparison in which every (framework, threads, batch size)
runs in a fresh process (TensorFlow fixes its thread count once per process, and no run
inherits another's warm caches or thread pools)::

    python -m gpuaccel.peers [--frameworks gpuaccel,keras,torch] [--batch-sizes 128]
                             [--threads 2] [--epochs 1] [--limit N] [--test-limit N] [--seed 0]
                             [--repeat 1] [--json FILE]

It prints images/s per run (steady state, epochs after the first, when --epochs > 1;
else the single epoch, warm-up included), the medians over --repeat runs, and gpuaccel's
ratio to each peer. Timings are never asserted anywhere.
"""
import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time

from .._extras import hint
from .report import history_rows, summarize

NAMES = ("keras", "torch")
_MODULES = {"keras": ("keras_ref.py", "tensorflow"), "torch": ("torch_ref.py", "torch")}
_DEVICE = {"keras": "keras-cpu", "torch": "torch-cpu"}
_INSTALL_HINT = hint("peers", "tensorflow-cpu torch") + "; in a source checkout: make peers"


class Unavailable(str):
    """Why a peer cannot run: a str that is false in a boolean test, so
    ``if peers.available()['torch']:`` reads naturally."""

    def __bool__(self):
        return False


PACKAGE = __name__.rpartition(".")[0] + ".peer_models"   # gpuaccel.study.peer_models


def peers_dir():
    """Where keras_ref.py and torch_ref.py are: $GPUACCEL_PEERS_DIR (an override, used by
    tests to put stand-ins in), else None: the modules of gpuaccel.study.peer_models."""
    return os.environ.get("GPUACCEL_PEERS_DIR") or None


def _model_missing(name):
    """'' when the model module of peer ``name`` can be found (nothing imported), else why not."""
    filename = _MODULES[name][0]
    folder = peers_dir()
    if folder:
        path = os.path.join(folder, filename)
        return "" if os.path.isfile(path) else f"{path} not found (GPUACCEL_PEERS_DIR={folder})"
    module = f"{PACKAGE}.{filename[:-3]}"
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return "" if found else f"{module} not found: this gpuaccel install lacks its peer models (reinstall gpuaccel)"


def _check(name):
    """'' when ``name`` can be tried, else why not (cheap: finds modules, imports nothing big)."""
    if name not in _MODULES:
        return f"unknown peer {name!r}; choose from {', '.join(NAMES)}"
    missing = _model_missing(name)
    if missing:
        return missing
    package = _MODULES[name][1]
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError) as e:
        found, package = False, f"{package} ({e})"
    if not found:
        return f"{package} is not installed: {_INSTALL_HINT}"
    return ""


def available():
    """Peer name -> True when it can run here, else an ``Unavailable`` reason (a falsy str).

    Checks that the framework package and the model module are present, without importing
    the framework (that takes seconds); a broken install shows up as run()'s error."""
    return {name: (Unavailable(_check(name)) if _check(name) else True) for name in NAMES}


def load(name):
    """The module gpuaccel.study.peer_models.<name>_ref (importing it imports no framework),
    or with $GPUACCEL_PEERS_DIR set, <that folder>/<name>_ref.py."""
    if name not in _MODULES:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(NAMES)}")
    folder = peers_dir()
    if not folder:
        return importlib.import_module(f"{PACKAGE}.{_MODULES[name][0][:-3]}")
    path = os.path.join(folder, _MODULES[name][0])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (GPUACCEL_PEERS_DIR={folder})")
    mod_name = f"gpuaccel_peer_{name}_ref"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


def _default_threads():
    try:
        from .. import _C

        return _C.get_num_threads()
    except Exception:
        return None


def run(name, data, epochs, batch_size, seed=0, threads=None, verbose=0, isolate=False):
    """Train the reference CNN with peer ``name`` ('keras' or 'torch') on the CPU.

    data = (x, y, xt, yt): x, xt float32 (N, 1, 28, 28) in [0, 1], y, yt labels.
    threads: the framework's intra-op threads; default gpuaccel's current thread count, so
    that a peer gets the cores gpuaccel gets. Returns, like gpuaccel.bench.train(),
    {'device': 'keras-cpu' | 'torch-cpu', 'epochs': per-epoch rows (gpuaccel History keys,
    'epoch', 'warmup'), 'summary': bench.summarize(rows), 'error': None or a message},
    plus 'threads' (in force), 'versions' and 'config'. Never raises for a missing or
    failing framework: the message is in 'error'.

    isolate=True trains in a child process. Use it whenever both peers run from one
    process: TensorFlow and PyTorch (through Triton) each carry their own LLVM, and
    loading both aborts the process ("Option ... registered more than once")."""
    if isolate:
        return _run_in_child(name, data, epochs, batch_size, seed, threads)

    device = _DEVICE.get(name, f"{name}-cpu")
    result = {"device": device, "epochs": [], "summary": {"epochs": 0}, "error": None}
    reason = _check(name)
    if reason:
        result["error"] = reason
        return result
    if threads is None:
        threads = _default_threads()
    try:
        module = load(name)
        x, y, xt, yt = data
        out = module.train(x, y, xt, yt, epochs=epochs, batch_size=batch_size, seed=seed,
                           threads=threads, verbose=verbose)
    except ImportError as e:
        result["error"] = f"{_MODULES[name][1]} does not import ({type(e).__name__}: {e}): {_INSTALL_HINT}"
        return result
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        return result
    result["epochs"] = history_rows(out["history"])
    result["summary"] = summarize(result["epochs"])
    result["threads"] = out.get("threads")
    result["versions"] = out.get("versions", {})
    result["config"] = out.get("config", {})
    if threads and out.get("threads") and out["threads"] != threads:
        result["warning"] = (f"{threads} threads were asked for but {out['threads']} are in force "
                             f"({name} fixes its thread count once per process)")
    return result


# ------------------------------------------------------------------ the comparison command
def images_per_s(result):
    """Steady-state images/s (epochs after the first) when there are any, else the only epoch's."""
    s = result.get("summary", {})
    if s.get("steady_images_per_s"):
        return s["steady_images_per_s"], "steady"
    rows = result.get("epochs") or []
    return (rows[0]["images_per_s"], "epoch 1") if rows else (None, None)


def _one(args):
    """Child process: one framework, one thread count, one batch size; prints the result as JSON."""
    from . import bench

    data = bench.load_fashion(args.limit)
    if args.test_limit:
        data = (data[0], data[1], data[2][:args.test_limit], data[3][:args.test_limit])
    if args.one == "gpuaccel":
        import gpuaccel as ga

        ga.set_num_threads(args.threads[0])
        result = bench.train("cpu", data, args.epochs, args.batch_sizes[0], args.seed)
        result["device"] = "gpuaccel-cpu"
        result["threads"] = ga.get_num_threads()
        result["versions"] = {"gpuaccel": ga.__version__}
    else:
        result = run(args.one, data, args.epochs, args.batch_sizes[0], args.seed, threads=args.threads[0])
    result["train_images"] = len(data[0])
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0 if result["error"] is None else 1


_CHILD = ("import json, sys, numpy as np; from gpuaccel.study import peers; d = np.load(sys.argv[1]); "
          "r = peers.run(sys.argv[2], (d['x'], d['y'], d['xt'], d['yt']), int(sys.argv[3]), int(sys.argv[4]), "
          "int(sys.argv[5]), threads=int(sys.argv[6]) or None); print('RESULT ' + json.dumps(r, default=str))")


def _result_of(proc, device):
    """The RESULT line a child printed, or an error result with the end of its output."""
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"device": device, "epochs": [], "summary": {"epochs": 0},
            "error": f"exit {proc.returncode}: {' | '.join(tail)}"}


def _run_in_child(name, data, epochs, batch_size, seed, threads):
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="gpuaccel-peers-") as tmp:
        path = os.path.join(tmp, "data.npz")
        x, y, xt, yt = data
        np.savez(path, x=x, y=y, xt=xt, yt=yt)
        cmd = [sys.executable, "-c", _CHILD, path, name, str(epochs), str(batch_size), str(seed), str(threads or 0)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return _result_of(proc, _DEVICE.get(name, f"{name}-cpu"))


def _spawn(framework, threads, batch, args):
    cmd = [sys.executable, "-m", "gpuaccel.study.peers", "--one", framework, "--threads", str(threads),
           "--batch-sizes", str(batch), "--epochs", str(args.epochs), "--seed", str(args.seed)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.test_limit:
        cmd += ["--test-limit", str(args.test_limit)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    result = _result_of(proc, framework)
    result.update(framework=framework, batch_size=batch, requested_threads=threads, process_wall_s=wall)
    return result


def _load_average():
    try:
        return os.getloadavg()
    except OSError:
        return None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m gpuaccel.peers",
                                description="gpuaccel vs Keras vs PyTorch on the reference CNN, CPU, side by side.")
    p.add_argument("--frameworks", default="gpuaccel,keras,torch")
    p.add_argument("--batch-sizes", default="128", help="comma-separated, e.g. 1,8,32,128,512")
    p.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 1,2")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit", type=int, help="train on the first N training images only")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images only (saves time; "
                   "the evaluation is never inside the timings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="runs of every configuration (interleaved)")
    p.add_argument("--json", help="write every result to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    args.threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    if args.one:
        return _one(args)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    print(f"frameworks {frameworks}, batch sizes {args.batch_sizes}, threads {args.threads}, "
          f"epochs {args.epochs}, limit {args.limit}, test limit {args.test_limit}, repeat {args.repeat}; load average {_load_average()}", flush=True)
    results = []
    for rep in range(args.repeat):
        for threads in args.threads:
            for batch in args.batch_sizes:
                for fw in frameworks:
                    r = _spawn(fw, threads, batch, args)
                    r["repeat"] = rep
                    r["load_average"] = _load_average()
                    results.append(r)
                    ips, basis = images_per_s(r)
                    acc = (r.get("summary") or {}).get("final_val_accuracy")
                    print(f"run {rep + 1}: {fw:8s} threads {threads} batch {batch:4d}: "
                          + (f"{ips:9,.0f} images/s ({basis}), test acc {acc:.4f}, threads in force {r.get('threads')}"
                             if ips else f"failed: {r.get('error')}") + f"; load {r['load_average']}", flush=True)
    print("\nmedian images/s over runs (gpuaccel / peer ratio in brackets)")
    import numpy as np

    for threads in args.threads:
        for batch in args.batch_sizes:
            med = {}
            for fw in frameworks:
                vals = [images_per_s(r)[0] for r in results if r["framework"] == fw and r["batch_size"] == batch
                        and r["requested_threads"] == threads and images_per_s(r)[0]]
                med[fw] = float(np.median(vals)) if vals else None
            cells = []
            for fw in frameworks:
                if med[fw] is None:
                    cells.append(f"{fw} -")
                elif fw != "gpuaccel" and med.get("gpuaccel"):
                    cells.append(f"{fw} {med[fw]:,.0f} ({med['gpuaccel'] / med[fw]:.2f}x)")
                else:
                    cells.append(f"{fw} {med[fw]:,.0f}")
            print(f"threads {threads} batch {batch:4d}: " + ", ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "results": results}, f, indent=1, default=str)
    return 0 if all(r.get("error") is None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
