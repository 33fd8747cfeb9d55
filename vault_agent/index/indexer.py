"""Keeps the index equal to the vault: full scan, incremental updates and the start-up reconcile.

A note is re-read only when its (mtime, size) changed, re-chunked only when its content hash
changed, and a chunk is embedded only when no vector exists for its exact text: a restart on an
unchanged vault embeds nothing, and moving a folder re-uses every vector.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import Settings
from ..paths import AppDirs
from ..vault.files import NoteReadError, VaultFiles
from ..vault.notes import parse_note
from .catalog import Catalog, ChunkRow, now_iso
from .embedder import Embedder
from .vectors import VectorStore

# Embed and store in groups this large. The embedder batches texts of similar length from each group,
# so a bigger group pads less: 512 spent ~18% of the embedding on padding, 2048 ~5%. Still bounded:
# ~2 MB of text and ~25 MB of vectors in flight.
FLUSH_CHUNKS = 2048
Progress = Callable[[int, int], None]  # (notes done, notes total)


@dataclass
class SyncReport:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class _Pending:
    note: dict
    chunks: list[ChunkRow]
    embed_texts: dict[str, str]  # chunk id -> text to embed, for chunks without a vector
    hashes: dict[str, str]  # chunk id -> content hash
    stale_ids: set[str]


def index_key(vault: Path) -> str:
    return f"{vault.name}-{hashlib.sha1(str(vault).encode()).hexdigest()[:8]}"


def embed_text(title: str, aliases: list[str], heading: str, text: str) -> str:
    # Title and heading path go in with the text: questions name the topic more often than the words.
    head = title + (f" ({', '.join(aliases)})" if aliases else "")
    return f"{head}\n{heading}\n{text}" if heading else f"{head}\n{text}"


class Indexer:
    def __init__(self, settings: Settings, vault: Path, dirs: AppDirs, embedder: Embedder | None = None):
        self.settings = settings
        self.vault = vault
        s = settings.index
        self.files = VaultFiles(vault, s.ignore, int(s.max_note_mb * 2**20))
        self.directory = dirs.index_dir / index_key(vault)
        self.catalog = Catalog(self.directory / "catalog.sqlite")
        self.embedder = embedder or Embedder(s)
        self.vectors = VectorStore(self.directory / "chroma", self.embedder.label)
        self.lock = threading.RLock()  # one sync at a time; searches don't take it
        self._scan_total: int | None = None  # notes found by the reconcile now running, else None
        self._reset_if_settings_changed()

    def close(self) -> None:
        self.catalog.close()

    def _reset_if_settings_changed(self) -> None:
        """Chunks depend on the model and chunk size; if either changed, the old index is void."""
        signature = f"{self.embedder.label}|{self.settings.index.chunk_chars}|v1"
        if self.catalog.get_meta("signature") != signature:
            self.catalog.reset()
            self.catalog.set_meta("signature", signature)

    # --- syncing ---------------------------------------------------------------------------
    def reconcile(self, progress: Progress | None = None, force: bool = False) -> SyncReport:
        """Bring the index in line with the whole vault (start-up, `vault-agent index`)."""
        try:
            return self._reconcile(progress, force)
        finally:
            self._scan_total = None

    def _reconcile(self, progress: Progress | None, force: bool) -> SyncReport:
        start = time.perf_counter()
        with self.lock:
            found, scan_errors = self.files.scan()
            self._scan_total = len(found) + len(scan_errors)
            known = self.catalog.note_stats()
            gone = [p for p in known if p not in found]
            changed = [
                rel for rel, f in found.items() if force or known.get(rel, (None, None))[:2] != (f.mtime_ns, f.size)
            ]
            report = SyncReport(unchanged=len(found) - len(changed))
            for rel, err in scan_errors.items():
                self.catalog.record_failure(rel, err)
                report.errors[rel] = err
            report.failed += len(scan_errors)
            self.catalog.clear_failures(keep=set(scan_errors) | set(changed))
            # index before removing: a moved note finds its vectors under the old path and re-uses them
            self._index(changed, report, progress, force)
            if gone:
                self._remove(gone, report)
            self._finish(report, start)
        return report

    def sync_paths(self, rels: set[str]) -> SyncReport:
        """Re-check just these vault-relative paths (from the watcher): index, update or remove each."""
        start = time.perf_counter()
        with self.lock:
            report = SyncReport()
            present, missing = [], []
            for rel in sorted(rels):
                if self.files.is_ignored(rel):
                    continue
                (present if self.files.absolute(rel).exists() else missing).append(rel)
            self._index(present, report, None, force=False)
            known = self.catalog.note_stats()
            self._remove([r for r in missing if r in known], report)
            self.catalog.clear_failures(keep=set(self.catalog.failures()) - set(missing))
            self._finish(report, start)
        return report

    def _finish(self, report: SyncReport, start: float) -> None:
        report.seconds = time.perf_counter() - start
        self.catalog.set_meta("last_sync", now_iso())

    def _remove(self, paths: list[str], report: SyncReport) -> None:
        stale = [cid for p in paths for cid in self.catalog.chunk_ids(p)]
        self.catalog.remove_notes(paths)
        self.vectors.delete(stale)
        report.removed += len(paths)

    def _index(self, rels: list[str], report: SyncReport, progress: Progress | None, force: bool) -> None:
        known = self.catalog.note_stats()
        pending: list[_Pending] = []
        waiting = 0
        for done, rel in enumerate(rels, 1):
            try:
                item = self._prepare(rel, known.get(rel), force)
            except NoteReadError as e:
                self.catalog.record_failure(rel, str(e))
                report.errors[rel] = str(e)
                report.failed += 1
                item = None
            except FileNotFoundError:  # deleted while we were indexing: treat as a delete
                if rel in known:
                    self._remove([rel], report)
                item = None
            if item is None:
                pass
            elif item == "unchanged":
                report.unchanged += 1
            else:
                pending.append(item)
                waiting += len(item.embed_texts)
                if waiting >= FLUSH_CHUNKS:
                    self._flush(pending, report)
                    pending, waiting = [], 0
            if progress:
                progress(done, len(rels))
        self._flush(pending, report)

    def _prepare(self, rel: str, known: tuple[int, int, str] | None, force: bool):
        stat = self.files.stat(rel)
        text, warning = self.files.read(rel)
        content_hash = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        if known and known[2] == content_hash and not force:
            self.catalog.touch_note(rel, stat.mtime_ns, stat.size)  # re-saved, same text
            return "unchanged"
        note = parse_note(rel, text, self.settings.index.chunk_chars)
        if note.frontmatter_error:
            warning = "; ".join(w for w in (warning, note.frontmatter_error) if w)
        old_ids = self.catalog.chunk_ids(rel)
        rows, texts, hashes = [], {}, {}
        for chunk in note.chunks:
            body = embed_text(note.title, note.aliases, chunk.heading_path, chunk.text)
            digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
            cid = hashlib.sha1(f"{rel}\0{digest}".encode()).hexdigest()[:24]
            while cid in hashes:  # the same text twice in one note
                cid += "+"
            hashes[cid] = digest
            if cid not in old_ids or force:
                texts[cid] = body
            rows.append(ChunkRow(cid, rel, chunk.ordinal, chunk.heading_path, chunk.anchor, chunk.text, chunk.start_line))
        title = note.title + (" " + " ".join(note.aliases) if note.aliases else "")
        row = dict(path=rel, title=title, mtime_ns=stat.mtime_ns, size=stat.size, content_hash=content_hash, warning=warning)
        return _Pending(row, rows, texts, hashes, old_ids - set(hashes))

    def _flush(self, pending: list[_Pending], report: SyncReport) -> None:
        if not pending:
            return
        ids = [cid for p in pending for cid in p.embed_texts]
        digests = {cid: p.hashes[cid] for p in pending for cid in p.embed_texts}
        reused = self._vectors_by_hash(set(digests.values()))
        texts = {cid: text for p in pending for cid, text in p.embed_texts.items()}
        to_embed = [cid for cid in ids if digests[cid] not in reused]
        fresh = dict(zip(to_embed, self.embedder.embed([texts[cid] for cid in to_embed])))
        vectors = [fresh[cid] if cid in fresh else reused[digests[cid]] for cid in ids]
        paths = {cid: p.note["path"] for p in pending for cid in p.embed_texts}
        metas = [{"path": paths[cid], "content_hash": digests[cid], "embedded_at": now_iso()} for cid in ids]
        self.vectors.add(ids, vectors, metas)
        self.catalog.replace_notes([(p.note, p.chunks) for p in pending])
        self.vectors.delete([cid for p in pending for cid in p.stale_ids])
        report.indexed += len(pending)
        report.chunks_embedded += len(fresh)
        report.chunks_reused += len(ids) - len(fresh)

    def _vectors_by_hash(self, digests: set[str]) -> dict[str, list[float]]:
        if not digests or self.vectors.count() == 0:
            return {}
        got = self.vectors.collection.get(where={"content_hash": {"$in": sorted(digests)}}, include=["embeddings", "metadatas"])
        return {m["content_hash"]: list(e) for m, e in zip(got["metadatas"], got["embeddings"])}

    # --- reporting ---------------------------------------------------------------------------
    def index_state(self) -> dict:
        """What an answer is made with: `syncing` until the first full pass is done and while a
        reconcile runs, else `ready`; notes indexed / total so far. Cheap enough for every answer."""
        indexed = self.catalog.counts()["notes"]
        scanning = self._scan_total
        if scanning is not None:
            total = max(scanning, indexed)
        else:
            total = indexed + len(self.catalog.failures())
        syncing = scanning is not None or self.catalog.get_meta("last_sync") is None
        return {"state": "syncing" if syncing else "ready", "notes_indexed": indexed, "notes_total": total}

    def status(self) -> dict:
        counts = self.catalog.counts()
        failures = self.catalog.failures()
        return {
            "vault": str(self.vault),
            "notes_indexed": counts["notes"],
            "notes_total": counts["notes"] + len(failures),
            "chunks": counts["chunks"],
            "last_sync": self.catalog.get_meta("last_sync"),
            "embedding_model": self.embedder.label,
            "failed": failures,
            "warnings": self.catalog.warnings(),
        }
