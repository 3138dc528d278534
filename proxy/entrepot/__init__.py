"""Entrepôt: a verifying, caching mirror of Go modules (and, later, npm packages)."""

__version__ = "0.1.0"
