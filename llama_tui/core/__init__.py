"""Shared vocabulary: generation parameters, the Backend contract and its data, errors.

Imports nothing of ours, so every layer may use it."""
