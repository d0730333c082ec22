"""Ingest pipeline: load files, clean text, chunk, index."""
