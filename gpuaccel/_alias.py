"""Old names of the study's modules: ``gpuaccel.bench`` is ``gpuaccel.study.bench`` (the
same module object, so a monkeypatch on either is seen by both), and so for peers, plots,
compare and dist_bench. Each old module is a few lines that call ``alias`` on import and
``run_main`` when executed with ``python -m``."""
import importlib
import sys


def alias(old_name):
    """Import gpuaccel.study.<name> and put it in sys.modules under ``old_name`` too."""
    module = importlib.import_module("gpuaccel.study." + old_name.rpartition(".")[2])
    sys.modules[old_name] = module
    return module


def run_main(old_name):
    """``python -m gpuaccel.<name>``: the study module's main() as the exit status."""
    module = importlib.import_module("gpuaccel.study." + old_name.rpartition(".")[2])
    sys.exit(module.main())
