"""Test-wide set-up: quiet gRPC, a private model cache, and seeded random checkpoints."""

from __future__ import annotations

import os

# Set before grpc is imported anywhere in the test process.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
