"""takeover."""
