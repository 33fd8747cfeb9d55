"""Where GGUF models already sit on this machine: Ollama's store, LM Studio's folders, the Hugging Face
cache, the bundled model and the folders in `llm.model_dirs`. Each scanner names files the way its
tool does (Ollama's `model:tag`, LM Studio's `publisher/model/file.gguf`, Hugging Face's
`org/repo/file.gguf`) and never raises: an unreadable store is an empty one, a broken entry a row
with its reason."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .info import Found

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY, OLLAMA_NAMESPACE = "registry.ollama.ai", "library"
_PART = re.compile(r"^(?P<stem>.*)-(?P<n>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)


def is_projector(path: Path) -> bool:
    """LM Studio and Hugging Face repos put a vision model's projector beside it: mmproj-*.gguf."""
    return "mmproj" in path.name.lower()


def group_parts(paths: Iterable[Path], *, siblings: bool = False) -> list[tuple[tuple[Path, ...], str | None]]:
    """Split models (name-00001-of-00003.gguf ...) as one entry (parts in order, with a problem when one
    is missing); other files as themselves. `siblings`: look for a part's siblings in its folder."""
    out: list[tuple[tuple[Path, ...], str | None]] = []
    seen: set[tuple[Path, str]] = set()
    for path in paths:
        m = _PART.match(path.name)
        if not m:
            out.append(((path,), None))
            continue
        key = (path.parent, m["stem"])
        if key in seen:
            continue
        seen.add(key)
        total = int(m["total"])
        parts = tuple(path.parent / f"{m['stem']}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1))
        missing = [str(i) for i, p in enumerate(parts, 1) if not p.exists()]
        problem = f"split model with part {', '.join(missing)} of {total} missing" if missing else None
        out.append((parts, problem))
    return out


def _ggufs(folder: Path, pattern: str) -> list[Path]:
    """Files (or links, maybe dangling: listed as broken then) matching `pattern`; none if unreadable."""
    try:
        return sorted(p for p in folder.glob(pattern) if p.is_file() or p.is_symlink())
    except OSError:
        return []


def _dirs(folder: Path, pattern: str) -> list[Path]:
    try:
        return sorted(p for p in folder.glob(pattern) if p.is_dir())
    except OSError:
        return []


# --- Ollama -----------------------------------------------------------------------------------------


def ollama_roots(env: Mapping[str, str], home: Path) -> list[Path]:
    if env.get("OLLAMA_MODELS"):
        return [Path(env["OLLAMA_MODELS"]).expanduser()]
    return [home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def ollama_name(registry: str, namespace: str, model: str, tag: str) -> str:
    """As `ollama list` shows it: the default registry and the `library` namespace left out."""
    prefix = [] if registry == OLLAMA_REGISTRY else [registry]
    if namespace != OLLAMA_NAMESPACE or prefix:
        prefix.append(namespace)
    return "/".join([*prefix, model]) + f":{tag}"


def scan_ollama(root: Path) -> Iterator[Found]:
    manifests = root / "manifests"
    for manifest in _ggufs(manifests, "*/*/*/*"):
        registry, namespace, model, tag = manifest.relative_to(manifests).parts
        name = ollama_name(registry, namespace, model, tag)
        try:
            layers = json.loads(manifest.read_text()).get("layers") or []
            digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER)
        except StopIteration:
            continue  # a manifest without model weights (e.g. an embedding-only push): nothing to serve
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
            yield Found(name, "ollama", (manifest,), f"unreadable Ollama manifest {manifest} ({e})")
            continue
        blob = root / "blobs" / str(digest).replace(":", "-", 1)
        problem = None if blob.is_file() else f"the manifest points at a missing blob {blob.name} (re-run ollama pull)"
        yield Found(name, "ollama", (blob,), problem)


# --- LM Studio ----------------------------------------------------------------------------------------


def lmstudio_roots(home: Path) -> list[Path]:
    roots = []
    pointer = home / ".lmstudio-home-pointer"
    try:
        target = pointer.read_text().strip()
    except OSError:
        target = ""
    roots.append((Path(target).expanduser() if target else home / ".lmstudio") / "models")
    roots.append(home / ".cache" / "lm-studio" / "models")
    return roots


def scan_lmstudio(root: Path) -> Iterator[Found]:
    files = [p for p in _ggufs(root, "*/*/*.gguf") if not is_projector(p)]
    for paths, problem in group_parts(files):
        yield Found(paths[0].relative_to(root).as_posix(), "lmstudio", paths, problem)


# --- Hugging Face cache ------------------------------------------------------------------------------


def hf_roots(env: Mapping[str, str], home: Path) -> list[Path]:
    roots = []
    if env.get("HF_HUB_CACHE"):
        roots.append(Path(env["HF_HUB_CACHE"]).expanduser())
    if env.get("HF_HOME"):
        roots.append(Path(env["HF_HOME"]).expanduser() / "hub")
    roots.append(home / ".cache" / "huggingface" / "hub")
    return roots


def scan_hf_cache(root: Path) -> Iterator[Found]:
    for repo in _dirs(root, "models--*"):
        repo_id = repo.name.removeprefix("models--").replace("--", "/")
        # newest snapshot first: the same file in an older revision is named with its revision
        snapshots = sorted(_dirs(repo / "snapshots", "*"), key=_mtime, reverse=True)
        named: set[str] = set()
        for snapshot in snapshots:
            files = [p for p in _ggufs(snapshot, "**/*.gguf")]
            for paths, problem in group_parts(files):
                name = f"{repo_id}/{paths[0].relative_to(snapshot).as_posix()}"
                if name in named:
                    name = f"{name}@{snapshot.name[:7]}"
                named.add(name)
                yield Found(name, "huggingface", paths, problem)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# --- the bundled model and llm.model_dirs ---------------------------------------------------------------


def scan_bundled() -> Iterator[Found]:
    from ..config import BUNDLED
    from ..errors import UserError
    from ..llm.backend import resolve_model_path

    try:
        yield Found(BUNDLED, "bundled", (resolve_model_path(BUNDLED),))
    except UserError:
        return


def scan_folder(root: Path) -> Iterator[Found]:
    for paths, problem in group_parts(_ggufs(root, "**/*.gguf")):
        yield Found(paths[0].relative_to(root).as_posix(), "folder", paths, problem)


def everything(model_dirs: Iterable[str], env: Mapping[str, str] | None = None,
               home: Path | None = None) -> Iterator[Found]:
    """Every store, in the order rows are listed: a file reached twice keeps its first name, so the
    tools' own names (Ollama's model:tag) win over a link to the same file in llm.model_dirs."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    yield from scan_bundled()
    for scan, roots in ((scan_ollama, ollama_roots(env, home)), (scan_lmstudio, lmstudio_roots(home)),
                        (scan_hf_cache, hf_roots(env, home))):
        for root in _distinct(roots):
            yield from scan(root)
    for folder in model_dirs:
        yield from scan_folder(Path(folder).expanduser())


def _distinct(roots: list[Path]) -> list[Path]:
    out, seen = [], set()
    for root in roots:
        key = os.path.realpath(root)
        if key not in seen and root.is_dir():
            seen.add(key)
            out.append(root)
    return out
