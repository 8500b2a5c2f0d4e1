"""Ingestion workers: the claim loop, heartbeats, the rescuer timer and graceful shutdown."""
