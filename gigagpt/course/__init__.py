"""Helpers for the course notebooks: exercise checks and the demonstrations that need a little machinery."""
