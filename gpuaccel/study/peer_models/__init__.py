"""The reference CNN in Keras (``keras_ref``) and PyTorch (``torch_ref``), the peers of
``gpuaccel.study.peers``. Importing a module here imports no framework; ``train()`` does."""
