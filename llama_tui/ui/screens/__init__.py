"""Modal screens: help, confirm, model picker, code-block picker, sessions."""

from pathlib import Path

# The dialogs' shared rules (`.dialog`, `.picker`, ...): each dialog screen names this file
# in its CSS_PATH, so Textual reads it when the first dialog opens, not before the first
# paint.
DIALOG_CSS = Path(__file__).resolve().parent.parent / "dialogs.tcss"
