"""The scheduler service: request state, block tables, policies; drives the executor (issue 3)."""
