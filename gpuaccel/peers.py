"""``gpuaccel.peers`` is ``gpuaccel.study.peers`` (the same module object; gpuaccel/_alias.py)."""
from ._alias import alias, run_main

if __name__ == "__main__":
    run_main("gpuaccel.peers")
else:
    alias(__name__)
