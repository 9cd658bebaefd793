"""Web views of the workers: `/health`, `/livez` and `/metrics` (pages), device data (views)."""
