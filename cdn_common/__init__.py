"""The library both services use: settings loading, HTTP helpers, errors, logging,
metrics and the access middleware.

`edge` and `origin` never import each other (their contract is HTTP); what they share
lives here, and this package imports neither of them. Developer and operator tools
(dev server, stack runner, config docs, health check) live in `tools/`.
"""
