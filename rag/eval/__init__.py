"""Batch evaluation: retrieval metrics and answer metrics over labelled question sets."""
