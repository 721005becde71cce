"""Hostile files for the "loading never runs code" tests: an object whose unpickling creates a marker file."""
from __future__ import annotations


class Marker:
    """Unpickling this creates the file ``path``: proof that a load ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))
