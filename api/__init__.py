"""Composition root: HTTP API, auth and the CLI."""
