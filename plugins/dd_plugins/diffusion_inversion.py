"""Diffusion Inversion (placeholder, being written)."""
