"""Conversations as data and files: transcript, journal, export, resume. No textual, no torch."""
