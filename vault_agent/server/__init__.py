"""The daemon's HTTP API (FastAPI) and its guards (token, Host, Origin, body size)."""
