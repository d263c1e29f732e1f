"""The command line: argument parsing, headless runs, console output, --show-config."""
