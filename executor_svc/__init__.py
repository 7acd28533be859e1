"""The executor service: model weights, paged KV cache, swaps and sampling, driven by plans."""

from __future__ import annotations

__version__ = "0.1.0"
