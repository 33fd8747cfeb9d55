"""The vector side of the index: one chromadb PersistentClient collection per embedding model.

The collection's name is derived from the model's identity (bundled name, resolved path or hub id)
and its dimension, so two models in folders of the same name never share vectors. Only the writer
of an index creates, resets or drops collections; a read-only store opens an existing one or none.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

ADD_BATCH = 4000  # chromadb caps one add() at its max batch size (~5k); stay under it
PREFIX = "chunks-"


def collection_prefix(identity: str) -> str:
    return f"{PREFIX}{hashlib.sha1(identity.encode()).hexdigest()[:16]}-d"


def collection_name(identity: str, dimension: int) -> str:
    """The model's identity and its vector length: an existing collection is found by the identity
    alone (no model load on a no-op start), and a model that changed its dimension gets another."""
    return f"{collection_prefix(identity)}{dimension}"


def _client(directory: Path):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    # one settings value everywhere: chromadb refuses a second client on a path with other settings
    return chromadb.PersistentClient(path=str(directory),
                                     settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False))


def drop_collections(directory: Path) -> int:
    """Delete every chunk collection in this store (any model's): the writer's reset when the index
    settings change. Returns how many were dropped."""
    if not (directory / "chroma.sqlite3").exists():
        return 0
    client = _client(directory)
    dropped = 0
    for c in client.list_collections():
        name = c if isinstance(c, str) else c.name
        if name.startswith(PREFIX):
            client.delete_collection(name)
            dropped += 1
    return dropped


class VectorStore:
    def __init__(self, directory: Path, identity: str, dimension: Callable[[], int], *, readonly: bool = False):
        """`dimension` is called (it loads the model) only when no collection exists for this model."""
        self.identity = identity
        self.readonly = readonly
        self.client = None
        self.collection = None
        self.dimension: int | None = None
        self.name: str | None = None
        if readonly and not (directory / "chroma.sqlite3").exists():
            return  # nothing indexed yet: an empty store, and no files created
        if not readonly:
            directory.mkdir(parents=True, exist_ok=True)
        self.client = _client(directory)
        prefix = collection_prefix(identity)
        existing = sorted(n for n in (c if isinstance(c, str) else c.name for c in self.client.list_collections())
                          if n.startswith(prefix) and n[len(prefix):].isdigit())
        if existing:
            self.name = existing[-1]
            self.dimension = int(self.name[len(prefix):])
            self.collection = self.client.get_collection(self.name)
        elif not readonly:
            self.dimension = int(dimension())
            self.name = collection_name(identity, self.dimension)
            self.collection = self._create()

    def _create(self):
        return self.client.get_or_create_collection(
            self.name, metadata={"hnsw:space": "cosine", "model": self.identity, "dimension": self.dimension}
        )

    def count(self) -> int:
        return self.collection.count() if self.collection is not None else 0

    def add(self, ids: list[str], vectors: list[list[float]], metadatas: list[dict]) -> None:
        for i in range(0, len(ids), ADD_BATCH):
            self.collection.upsert(
                ids=ids[i : i + ADD_BATCH], embeddings=vectors[i : i + ADD_BATCH], metadatas=metadatas[i : i + ADD_BATCH]
            )

    def delete(self, ids: list[str]) -> None:
        if self.collection is None:
            return
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
        if self.collection is None:
            return set()
        out: set[str] = set()
        total = self.count()
        for offset in range(0, total, ADD_BATCH):  # paged: one get() of every id costs a lot of memory
            out.update(self.collection.get(include=[], limit=ADD_BATCH, offset=offset)["ids"])
        return out

    def present(self, ids: list[str]) -> set[str]:
        """Which of these ids have a vector."""
        if self.collection is None or not ids:
            return set()
        out: set[str] = set()
        for i in range(0, len(ids), ADD_BATCH):
            out.update(self.collection.get(ids=ids[i : i + ADD_BATCH], include=[])["ids"])
        return out

    def by_content_hash(self, digests: set[str]) -> dict[str, list[float]]:
        """A stored vector for each of these chunk-text hashes that has one (moved notes re-use them)."""
        if not digests or self.count() == 0:
            return {}
        got = self.collection.get(where={"content_hash": {"$in": sorted(digests)}}, include=["embeddings", "metadatas"])
        return {m["content_hash"]: list(e) for m, e in zip(got["metadatas"], got["embeddings"])}
