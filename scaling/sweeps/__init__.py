"""Sweeps: the grid grammar experiment files use, and the runner that executes trials."""
