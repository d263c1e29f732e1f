"""Everything Textual. Depends on engine / session / config, never the reverse."""
