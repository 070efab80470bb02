"""The optional extras of `pip install "gpuaccel[...]"` (pyproject.toml names the same
ones): what each brings, and the install hint every "missing optional package" message
gives, so a message always names the extra that fixes it."""

# extra -> what it adds (the packages are pyproject.toml's; tests/test_extras.py compares)
EXTRAS = {
    "plots": "the bench's PNG plots (matplotlib)",
    "images": "reading and writing folders of image files (Pillow)",
    "peers": "Keras and PyTorch running the same model beside gpuaccel (tensorflow-cpu, torch)",
    "notebooks": "running the notebooks (Jupyter, matplotlib, Pillow)",
    "test": "the test suite (pytest, hypothesis, and what the notebooks and folders need)",
    "all": "every extra above",
}


def hint(extra, packages):
    """'pip install "gpuaccel[extra]" (or: pip install packages)'."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; choose from {', '.join(EXTRAS)}")
    return f'pip install "gpuaccel[{extra}]" (or: pip install {packages})'
