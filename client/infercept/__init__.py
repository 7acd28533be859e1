"""InferCept client library and the pieces every process shares (wire helpers, logging).

The generated gRPC stubs live under ``infercept.v1`` (run ``make proto``).
"""

from __future__ import annotations

__version__ = "0.1.0"
