"""Handoff: a durable, idempotent, observable handoff from scrape storage to ingestion."""

__version__ = "0.1.0"
