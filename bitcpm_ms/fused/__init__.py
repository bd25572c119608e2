"""Fused CPU training ops."""
