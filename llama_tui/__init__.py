"""llama-tui: a terminal chat app for LLaMA-family models.

Importing this package must stay cheap: it never imports torch, transformers or textual,
so that `llama-tui --help` and `--version` answer at once.
"""

__version__ = "0.1.0"
