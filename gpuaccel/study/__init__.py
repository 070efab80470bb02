"""The study's tools: the bench (``python -m gpuaccel.bench``), the peers (Keras and
PyTorch running the same CNN, with their models in ``peer_models``), the plots, the
reports and their comparison, and the data-parallel bench. The library (``import
gpuaccel``) never imports this package; it ships in the wheel so that the commands work
from an installed gpuaccel. ``gpuaccel.bench``, ``gpuaccel.peers``, ``gpuaccel.plots``,
``gpuaccel.compare`` and ``gpuaccel.dist_bench`` are the same module objects as
``gpuaccel.study.<name>`` (see gpuaccel/_alias.py)."""
