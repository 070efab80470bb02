"""``gpuaccel.plots`` is ``gpuaccel.study.plots`` (the same module object; gpuaccel/_alias.py)."""
from ._alias import alias

alias(__name__)
