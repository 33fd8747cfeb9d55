"""Keeps the index equal to the vault: full scan, incremental updates and the start-up reconcile.

A note is re-read only when its (mtime, size) changed, re-chunked only when its content hash
changed, and a chunk is embedded only when no vector exists for its exact text: a restart on an
unchanged vault embeds nothing, and moving a folder re-uses every vector. `--full` (force)
re-embeds everything.

Two stores describe the index: the SQLite catalog (the truth about what is indexed) and the
chroma vectors. Every write goes vectors-first, catalog-commit, then stale-vector delete, so a
crash at any point leaves at worst vectors the catalog does not know (orphans) or, after a lost
vector write, catalog chunks without a vector. Each reconcile compares the two id sets, prunes
the orphans and re-embeds the missing, and reports both counts in `status`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import Settings
from ..errors import UserError
from ..paths import AppDirs
from ..vault.files import NoteReadError, VaultFiles
from ..vault.notes import parse_note
from .catalog import Catalog, ChunkRow, now_iso
from .embedder import Cancelled, Embedder
from .lock import IndexLock
from .vectors import VectorStore, drop_collections

log = logging.getLogger(__name__)

# Embed and store in groups this large. The embedder batches texts of similar length from each group,
# so a bigger group pads less: 512 spent ~18% of the embedding on padding, 2048 ~5%. Still bounded:
# ~2 MB of text and ~25 MB of vectors in flight. The first group of a sync is smaller and each next
# one doubles, so a first index of a big vault is searchable (and shows progress) within seconds.
FLUSH_CHUNKS = 2048
FIRST_FLUSH_CHUNKS = 256
Progress = Callable[[int, int], None]  # (notes done, notes total)


@dataclass
class SyncReport:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    orphan_vectors_pruned: int = 0  # vectors no catalog chunk refers to (a crash between the stores)
    missing_vectors_restored: int = 0  # catalog chunks that had lost their vector, embedded again
    stopped: bool = False  # cut short by shutdown; the next reconcile finishes the job
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Pending:
    note: dict
    chunks: list[ChunkRow]
    bodies: dict[str, str]  # chunk id -> the text that is embedded for it
    hashes: dict[str, str]  # chunk id -> content hash of that text
    stale_ids: set[str]


def embed_text(title: str, aliases: list[str], heading: str, text: str) -> str:
    # Title and heading path go in with the text: questions name the topic more often than the words.
    head = title + (f" ({', '.join(aliases)})" if aliases else "")
    return f"{head}\n{heading}\n{text}" if heading else f"{head}\n{text}"


class _WriteGuard:
    def __init__(self, lock: threading.Lock, stop: threading.Event):
        self.lock, self.stop = lock, stop

    def __enter__(self):
        self.lock.acquire()
        if self.stop.is_set():
            self.lock.release()
            raise Cancelled()

    def __exit__(self, *exc):
        self.lock.release()


class Indexer:
    """One vault's index. The writer (default) holds the index directory's exclusive lock for its
    whole life; `readonly=True` holds a shared one, never writes a byte and never resets anything."""

    def __init__(self, settings: Settings, vault: Path, dirs: AppDirs, embedder: Embedder | None = None, *,
                 readonly: bool = False, role: str = "index"):
        self.settings = settings
        self.vault = vault
        self.readonly = readonly
        s = settings.index
        self.files = VaultFiles(vault, s.ignore, int(s.max_note_mb * 2**20))
        self.directory = dirs.index_for(vault)
        self.owner = IndexLock(self.directory)
        if readonly:
            self.owner.acquire_reader(vault)
        else:
            self.owner.acquire_writer(role, vault)
        self.lock = threading.RLock()  # one sync at a time; searches don't take it
        self._stop = threading.Event()
        self._write_lock = threading.Lock()  # held across each multi-store write; close() takes it last
        self._vectors: VectorStore | None = None
        self._vectors_lock = threading.Lock()
        self.syncing = False
        self._vault_total: int | None = None  # notes found by the running reconcile's scan
        try:
            self.catalog = Catalog(self.directory / "catalog.sqlite", readonly=readonly)
            self.embedder = embedder or Embedder(s, cache_dir=dirs.data / "embedders")
            if not readonly:
                self._reset_if_settings_changed()
        except BaseException:
            self.owner.release()
            raise

    @property
    def signature(self) -> str:
        """What the stored chunks and vectors depend on: the model's identity and the chunk size."""
        return f"{self.embedder.identity}|{self.settings.index.chunk_chars}|v2"

    @property
    def vectors(self) -> VectorStore:
        """Opened on first use; the model is loaded only to create the collection (its dimension),
        so a no-op start or `status` never pays for it."""
        with self._vectors_lock:
            if self._vectors is None:
                self._vectors = VectorStore(self.directory / "chroma", self.embedder.identity,
                                            lambda: self.embedder.dimension, readonly=self.readonly)
            return self._vectors

    def stop(self) -> None:
        """Ask a running sync to stop at its next batch (shutdown); later syncs do nothing."""
        self._stop.set()

    def close(self, timeout: float = 60.0) -> None:
        """Stop syncing and close. A sync still running stops at its next batch; if it is still busy
        after `timeout` (one slow embedding batch on a loaded CPU), the write lock is taken and kept:
        the sync can then never write again, and the catalog stays open for the process exit to end,
        rather than be closed under it."""
        self._stop.set()
        if self.lock.acquire(timeout=timeout):
            try:
                self.catalog.close()
            finally:
                self.owner.release()
                self.lock.release()
            return
        log.warning("an index sync is still embedding after %.1fs; it will not write again", timeout)
        self._write_lock.acquire(timeout=timeout)  # an in-flight write (well under a second) completes

    def _writing(self):
        """The write phase of one batch: all of it or none of it, and none once stop() was called."""
        return _WriteGuard(self._write_lock, self._stop)

    def _reset_if_settings_changed(self) -> None:
        """Chunks depend on the model and chunk size; if either changed, the old index is void, vectors
        included. Vectors go first: a crash before the catalog reset leaves the old signature, so the
        next start resets again."""
        if self.catalog.get_meta("signature") == self.signature:
            return
        drop_collections(self.directory / "chroma")
        self.catalog.reset(self.signature)

    def _rebuild_for_new_dimension(self) -> None:
        """The model at the same path/id now makes vectors of another length: start over."""
        with self._vectors_lock:
            self._vectors = None
        drop_collections(self.directory / "chroma")
        self.catalog.reset(self.signature)

    # --- syncing ---------------------------------------------------------------------------
    def reconcile(self, progress: Progress | None = None, force: bool = False) -> SyncReport:
        """Bring the index in line with the whole vault (start-up, `vault-agent index`), repairing any
        disagreement between catalog and vectors on the way."""
        assert not self.readonly, "a read-only index is never synced"
        start = time.perf_counter()
        report = SyncReport()
        with self.lock:
            if self._stop.is_set():
                report.stopped = True
                return report
            self.syncing = True
            try:
                if force and self.embedder.dimension != self.vectors.dimension:
                    self._rebuild_for_new_dimension()
                self._reconcile(report, progress, force)
            except Cancelled:
                report.stopped = True
            finally:
                self.syncing, self._vault_total = False, None
            self._finish(report, start)
        return report

    def _reconcile(self, report: SyncReport, progress: Progress | None, force: bool) -> None:
        found, scan_errors = self.files.scan()
        self._vault_total = len(found) + len([r for r in scan_errors if not r.endswith("/")])
        unlisted = tuple(r for r in scan_errors if r.endswith("/"))  # folders we could not list
        known = self.catalog.note_stats()
        gone = [p for p in known if p not in found and p not in scan_errors and not p.startswith(unlisted)]
        missing = set() if force else self.catalog.all_chunk_ids() - self.vectors.all_ids()
        repair = self.catalog.paths_of(missing) & found.keys() if missing else set()
        changed = [
            rel for rel, f in found.items()
            if force or rel in repair or known.get(rel, (None, None))[:2] != (f.mtime_ns, f.size)
        ]
        report.unchanged = len(found) - len(changed)
        for rel, err in scan_errors.items():
            self._fail(rel, err, report)
        self.catalog.clear_failures(keep=set(scan_errors) | set(changed))
        # index before removing: a moved note finds its vectors under the old path and re-uses them
        self._index(changed, report, progress, force, repair)
        if report.stopped:
            return  # consistent as it stands: every batch was written whole or not at all
        if gone:
            self._remove(gone, report)
        report.missing_vectors_restored = len(self.vectors.present(sorted(missing)))
        orphans = self.vectors.all_ids() - self.catalog.all_chunk_ids()
        self.vectors.delete(sorted(orphans))
        report.orphan_vectors_pruned = len(orphans)
        if orphans or missing:
            log.warning("index repaired: %d orphan vectors pruned, %d missing vectors re-embedded",
                        len(orphans), report.missing_vectors_restored)
        self.catalog.set_meta("last_repair", json.dumps({
            "at": now_iso(), "orphan_vectors_pruned": len(orphans),
            "missing_vectors_restored": report.missing_vectors_restored}))

    def sync_paths(self, rels: set[str]) -> SyncReport:
        """Re-check just these vault-relative paths (from the watcher): index, update or remove each."""
        assert not self.readonly, "a read-only index is never synced"
        start = time.perf_counter()
        with self.lock:
            report = SyncReport()
            if self._stop.is_set():
                report.stopped = True
                return report
            present, missing = [], []
            for rel in sorted(rels):
                if self.files.is_ignored(rel):
                    continue
                (present if self._exists(rel) else missing).append(rel)
            try:
                self._index(present, report, None, force=False)
                known = self.catalog.note_stats()
                self._remove([r for r in missing if r in known], report)
                self.catalog.clear_failures(keep=set(self.catalog.failures()) - set(missing))
            except Cancelled:
                report.stopped = True
            self._finish(report, start)
        return report

    def _exists(self, rel: str) -> bool:
        try:
            os.lstat(self.files.absolute(rel))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True  # there but unreadable: indexing it records why
        return True

    def _finish(self, report: SyncReport, start: float) -> None:
        report.seconds = time.perf_counter() - start
        if not report.stopped:  # a sync cut short by shutdown did not bring the index up to date
            self.catalog.set_meta("last_sync", now_iso())

    def _remove(self, paths: list[str], report: SyncReport) -> None:
        vectors = self.vectors
        with self._writing():
            stale = [cid for p in paths for cid in self.catalog.chunk_ids(p)]
            self.catalog.remove_notes(paths)
            vectors.delete(stale)
        report.removed += len(paths)

    def _fail(self, rel: str, error: str, report: SyncReport) -> None:
        """This note is not indexed, and why: its rows and its vectors go, in that order."""
        vectors = self.vectors
        with self._writing():
            dropped = self.catalog.record_failure(rel, error)
            vectors.delete(sorted(dropped))
        report.errors[rel] = error
        report.failed += 1

    def _index(self, rels: list[str], report: SyncReport, progress: Progress | None, force: bool,
               repair: set[str] = frozenset()) -> None:
        known = self.catalog.note_stats()
        pending: list[_Pending] = []
        waiting, flush_at = 0, FIRST_FLUSH_CHUNKS
        try:
            for done, rel in enumerate(rels, 1):
                if self._stop.is_set():
                    raise Cancelled()
                share = getattr(self.embedder, "cpu_share", None)
                if share is not None:  # reading and parsing a note is CPU (and GIL) an answer wants
                    share.wait_for_answers(self._stop.is_set)
                item = self._prepare_one(rel, known, force, rel in repair, report)
                if item == "unchanged":
                    report.unchanged += 1
                elif item is not None:
                    pending.append(item)
                    waiting += len(item.bodies)
                    if waiting >= flush_at:
                        self._flush(pending, report, force)
                        pending, waiting, flush_at = [], 0, min(FLUSH_CHUNKS, flush_at * 2)
                if progress:
                    progress(done, len(rels))
            self._flush(pending, report, force)
        except Cancelled:
            report.stopped = True  # the batch in hand was never written: nothing half-done

    def _prepare_one(self, rel: str, known: dict, force: bool, recheck: bool, report: SyncReport):
        """One note's chunks, or None when it failed (recorded against it) or vanished."""
        try:
            return self._prepare(rel, known.get(rel), force, recheck)
        except FileNotFoundError:  # deleted while we were indexing: treat as a delete
            if rel in known:
                self._remove([rel], report)
        except NoteReadError as e:
            self._fail(rel, str(e), report)
        except OSError as e:  # any other I/O trouble with this one file
            self._fail(rel, f"cannot read: {e.strerror or e}", report)
        except Exception as e:  # a bug on one odd note must not stop the vault
            log.exception("indexing %s failed", rel)
            self._fail(rel, f"could not be indexed ({type(e).__name__}: {e})", report)
        return None

    def _prepare(self, rel: str, known: tuple[int, int, str] | None, force: bool, recheck: bool = False):
        stat = self.files.stat(rel)
        text, warning = self.files.read(rel)
        content_hash = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        if known and known[2] == content_hash and not (force or recheck):
            self.catalog.touch_note(rel, stat.mtime_ns, stat.size)  # re-saved, same text
            return "unchanged"
        note = parse_note(rel, text, self.settings.index.chunk_chars)
        if note.frontmatter_error:
            warning = "; ".join(w for w in (warning, note.frontmatter_error) if w)
        old_ids = self.catalog.chunk_ids(rel)
        rows, bodies, hashes = [], {}, {}
        for chunk in note.chunks:
            body = embed_text(note.title, note.aliases, chunk.heading_path, chunk.text)
            digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
            cid = hashlib.sha1(f"{rel}\0{digest}".encode()).hexdigest()[:24]
            while cid in hashes:  # the same text twice in one note
                cid += "+"
            hashes[cid] = digest
            bodies[cid] = body
            rows.append(ChunkRow(cid, rel, chunk.ordinal, chunk.heading_path, chunk.anchor, chunk.text, chunk.start_line))
        title = note.title + (" " + " ".join(note.aliases) if note.aliases else "")
        row = dict(path=rel, title=title, mtime_ns=stat.mtime_ns, size=stat.size, content_hash=content_hash, warning=warning)
        return _Pending(row, rows, bodies, hashes, old_ids - set(hashes))

    def _flush(self, pending: list[_Pending], report: SyncReport, force: bool = False) -> None:
        """Vectors for every chunk that lacks one, then the catalog, then drop replaced vectors.
        Embedding may be cancelled (shutdown) before anything of this batch is written."""
        if not pending:
            return
        bodies = {cid: body for p in pending for cid, body in p.bodies.items()}
        digests = {cid: p.hashes[cid] for p in pending for cid in p.bodies}
        paths = {cid: p.note["path"] for p in pending for cid in p.bodies}
        if force:  # --full: re-embed, re-use nothing
            need, reused = list(bodies), {}
        else:
            have = self.vectors.present(list(bodies))
            need = [cid for cid in bodies if cid not in have]
            reused = self.vectors.by_content_hash({digests[cid] for cid in need})
        to_embed = [cid for cid in need if digests[cid] not in reused]
        if to_embed and self.embedder.dimension != self.vectors.dimension:
            raise UserError(f"the embedding model {self.embedder.label} now makes {self.embedder.dimension}-"
                            f"dimensional vectors, the index holds {self.vectors.dimension}: run "
                            "`vault-agent index --full` to rebuild it")
        fresh = dict(zip(to_embed, self.embedder.embed([bodies[cid] for cid in to_embed], should_stop=self._stop.is_set)))
        vectors = [fresh[cid] if cid in fresh else reused[digests[cid]] for cid in need]
        metas = [{"path": paths[cid], "content_hash": digests[cid], "embedded_at": now_iso()} for cid in need]
        store = self.vectors
        with self._writing():
            if need:
                store.add(need, vectors, metas)
            self.catalog.replace_notes([(p.note, p.chunks) for p in pending])
            store.delete(sorted(cid for p in pending for cid in p.stale_ids))
        report.indexed += len(pending)
        report.chunks_embedded += len(fresh)
        report.chunks_reused += len(bodies) - len(fresh)

    # --- reporting ---------------------------------------------------------------------------
    def index_state(self) -> dict:
        """What an answer is made with: `syncing` until the first full pass is done and while a
        reconcile runs, else `ready`; notes indexed / total so far. Cheap enough for every answer."""
        indexed = self.catalog.counts()["notes"]
        syncing = self.syncing or self.catalog.get_meta("last_sync") is None
        return {"state": "syncing" if syncing else "ready", "notes_indexed": indexed,
                "notes_total": self._notes_total(indexed, self.catalog.failures())}

    def _notes_total(self, indexed: int, failures: dict) -> int:
        """The vault's note count: the running scan's while syncing, else indexed plus failed notes
        (an unlistable folder, `Folder/`, is not a note)."""
        settled = indexed + len([p for p in failures if not p.endswith("/")])
        total = self._vault_total if self.syncing and self._vault_total is not None else settled
        return max(total, indexed)

    def status(self) -> dict:
        counts = self.catalog.counts()
        failures = self.catalog.failures()
        try:
            repair = json.loads(self.catalog.get_meta("last_repair") or "{}")
        except ValueError:
            repair = {}
        stored = self.catalog.get_meta("signature")
        return {
            "vault": str(self.vault),
            "notes_indexed": counts["notes"],
            "notes_total": self._notes_total(counts["notes"], failures),
            "chunks": counts["chunks"],
            "syncing": self.syncing,
            "last_sync": self.catalog.get_meta("last_sync"),
            "embedding_model": self.embedder.label,
            "settings_changed": stored is not None and stored != self.signature,
            "orphan_vectors_pruned": int(repair.get("orphan_vectors_pruned", 0)),
            "missing_vectors_restored": int(repair.get("missing_vectors_restored", 0)),
            "failed": failures,
            "warnings": self.catalog.warnings(),
        }
