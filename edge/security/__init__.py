"""What the edge checks before it trusts a request: URL signatures (`signing`), the
network guard for absolute-URL sources (`netguard`)."""
