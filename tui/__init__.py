"""The Textual rating app: `vault-agent tui`. A client of the daemon's HTTP API only."""
