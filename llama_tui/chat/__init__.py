"""The chat core shared by the TUI and headless mode: state (`state.py`) and one reply
(`reply.py`), with the footer of a finished reply (`footer.py`). No UI, no torch."""
