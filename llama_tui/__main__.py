"""`python -m llama_tui` runs the same entry point as the `llama-tui` script."""

from llama_tui.cli.main import main

raise SystemExit(main())
