"""The vector side of the index: one chromadb PersistentClient collection per embedding model."""

from __future__ import annotations

import re
from pathlib import Path

ADD_BATCH = 4000  # chromadb caps one add() at its max batch size (~5k); stay under it


class VectorStore:
    def __init__(self, directory: Path, model_label: str):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        directory.mkdir(parents=True, exist_ok=True)
        self.client = chromadb.PersistentClient(
            path=str(directory), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        )
        name = "chunks-" + re.sub(r"[^a-zA-Z0-9._-]", "-", model_label)[:50]
        self.collection = self.client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})

    def count(self) -> int:
        return self.collection.count()

    def add(self, ids: list[str], vectors: list[list[float]], metadatas: list[dict]) -> None:
        for i in range(0, len(ids), ADD_BATCH):
            self.collection.upsert(
                ids=ids[i : i + ADD_BATCH], embeddings=vectors[i : i + ADD_BATCH], metadatas=metadatas[i : i + ADD_BATCH]
            )

    def delete(self, ids: list[str]) -> None:
        for i in range(0, len(ids), ADD_BATCH):
            self.collection.delete(ids=ids[i : i + ADD_BATCH])

    def query(self, vector: list[float], n: int) -> list[tuple[str, float]]:
        """(chunk id, cosine distance), nearest first."""
        total = self.count()
        if total == 0:
            return []
        res = self.collection.query(query_embeddings=[vector], n_results=min(n, total), include=["distances"])
        return list(zip(res["ids"][0], res["distances"][0]))

    def all_ids(self) -> set[str]:
        return set(self.collection.get(include=[])["ids"])
