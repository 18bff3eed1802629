"""redo."""
