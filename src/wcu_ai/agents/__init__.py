"""Agno agents over the parsed documents, run in the API process (see catalog.py)."""
