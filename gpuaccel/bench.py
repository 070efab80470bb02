"""``gpuaccel.bench`` is ``gpuaccel.study.bench`` (the same module object; gpuaccel/_alias.py)."""
from ._alias import alias, run_main

if __name__ == "__main__":
    run_main("gpuaccel.bench")
else:
    alias(__name__)
