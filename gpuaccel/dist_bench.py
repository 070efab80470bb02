"""``gpuaccel.dist_bench`` is ``gpuaccel.study.dist_bench`` (the same module object; gpuaccel/_alias.py)."""
from ._alias import alias, run_main

if __name__ == "__main__":
    run_main("gpuaccel.dist_bench")
else:
    alias(__name__)
