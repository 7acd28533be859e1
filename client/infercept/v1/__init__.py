"""Generated gRPC stubs for the ``infercept.v1`` protocol (``make proto`` writes them here)."""
