"""The scheduler service: request state, block tables, policies; drives the executor one plan per iteration."""

from __future__ import annotations

__version__ = "0.1.0"
