"""Adapters that let other frameworks use a knowledge base (installed with the matching extra)."""
