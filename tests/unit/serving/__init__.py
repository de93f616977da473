"""Tests of the serving image (train and serve entrypoints)."""
