"""The search index: embeddings (sentence-transformers), vectors (chromadb), a SQLite manifest + FTS5."""
