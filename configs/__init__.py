"""Shipped experiment configs: ``default`` (the schema of every config) and ``demo``."""
