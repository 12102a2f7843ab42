"""Run the exporter as ``python -m exporter``."""

from __future__ import annotations

from exporter.cli import main

main()
