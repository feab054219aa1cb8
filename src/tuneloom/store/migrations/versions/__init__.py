"""Schema revisions, oldest first; see ../__init__.py."""
