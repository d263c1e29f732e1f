"""Modal screens: help, confirm, model picker, code-block picker, sessions."""
