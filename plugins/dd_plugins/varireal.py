"""VariReal (placeholder, being written)."""
