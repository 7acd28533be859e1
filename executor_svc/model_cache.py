"""The on-disk cache of built-in models and measured profiles, and atomic writes into it.

The cache directory is ``$INFERCEPT_CACHE_DIR``, else ``~/.cache/infercept``. A built-in model is
an ordinary Hugging Face directory under ``models/<name>``, built once in a temporary directory
next to it and renamed into place, so a reader never sees a half-written model and concurrent
builders (two executors starting together) do not corrupt each other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# The file whose presence marks a complete model directory (every builder writes it last).
COMPLETE_MARKER = "tokenizer.json"


def cache_dir() -> Path:
    return Path(os.environ.get("INFERCEPT_CACHE_DIR") or Path.home() / ".cache" / "infercept")


def ensure_cached_model(name: str, build: Callable[[Path], object]) -> Path:
    """The directory ``models/<name>`` of the cache, built with build(staging_dir) on first use.

    The rename is atomic; whoever loses a race keeps the winner's copy (the builders are
    deterministic, so both are the same model).
    """
    model_dir = cache_dir() / "models" / name
    if (model_dir / COMPLETE_MARKER).is_file():
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=model_dir.parent))
    try:
        build(staging)
        staging.rename(model_dir)
    except OSError:
        if not (model_dir / COMPLETE_MARKER).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir
