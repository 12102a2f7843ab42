"""Benchmarks (see bench/README.md)."""

from __future__ import annotations
