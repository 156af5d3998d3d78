"""Jinja templates: shell lives here, decisions live in Python."""
