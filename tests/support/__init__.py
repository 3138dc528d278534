"""Test support: fixture modules, server processes, the go command (all on loopback)."""
