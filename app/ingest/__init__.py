"""Ingestion handlers and sinks."""
