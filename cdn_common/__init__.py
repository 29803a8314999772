"""Pieces both services use: settings loading, HTTP helpers, logging and the access middleware.

`edge` and `origin` never import each other (their contract is HTTP); what they share
lives here, and this package imports neither of them.
"""
