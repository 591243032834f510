"""Generators of candidate instruction data; each reaches a model only through an engine."""
