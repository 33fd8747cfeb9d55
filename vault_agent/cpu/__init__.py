"""Sharing the CPU between answers, indexing and whatever else runs on the machine."""
