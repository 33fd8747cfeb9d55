"""vault-agent: a local, self-improving assistant for an Obsidian vault."""

__version__ = "0.1.0"
