"""Example backends for docs/adding-a-backend.md (not installed with the package)."""
