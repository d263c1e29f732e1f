"""Widgets: transcript, prompt input, status bar, settings panel."""
