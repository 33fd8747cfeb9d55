"""The models on this machine as one list (`models list`, GET /models), and finding the one a user
names (`models use NAME|PATH`, POST /models/use)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .header_cache import HeaderCache
from .info import Found, ModelInfo, describe
from .stores import everything, group_parts

if TYPE_CHECKING:
    from ..config import Settings


class UnknownModel(UserError):
    """No listed model has this name and no such file exists (the API answers 404)."""

    http_status = 404


class UnusableModel(UserError):
    """The file is there but cannot be served: truncated, not GGUF, not a chat model (the API answers 422)."""

    http_status = 422


def list_models(settings: Settings, served: Path | None = None) -> list[ModelInfo]:
    """Every model in every store, each file once (a symlink or a second store reaching the same file
    keeps the first row), with unique names (a clash gets #2, #3); `served` marks the served one."""
    from .header_cache import default_cache

    cache = default_cache()
    rows: list[ModelInfo] = []
    files: set[str] = set()
    names: dict[str, int] = {}
    for found in everything(settings.llm.model_dirs):
        key = os.path.realpath(found.paths[0])
        if key in files:
            continue
        files.add(key)
        names[found.name] = names.get(found.name, 0) + 1
        if names[found.name] > 1:
            found = Found(f"{found.name}#{names[found.name]}", found.source, found.paths, found.problem)
        rows.append(describe(found, cache))
    served_key = os.path.realpath(served) if served is not None else None
    if served_key is not None and served_key not in files:  # a model_path outside every store
        rows.append(describe_file(served, source="config", cache=cache))
    cache.save(prune=True)  # summaries of files no longer found go
    for row in rows:
        row.served = served_key is not None and os.path.realpath(row.path) == served_key
    return rows


def find_model(spec: str, settings: Settings) -> ModelInfo:
    """The model `spec` names: a listed name, else a path to a GGUF file. UnknownModel when neither."""
    spec = spec.strip()
    if not spec:
        raise UnknownModel("name a model (see `vault-agent models list`) or give a GGUF file's path")
    for row in list_models(settings):
        if row.name == spec:
            return row
    kind, path = path_kind(spec)
    if kind == "file":
        return describe_file(path)
    if kind == "other":
        raise UnusableModel(f"{path} is not a file; give a GGUF file's path or a name from `vault-agent models list`")
    shown = spec if len(spec) <= 200 else spec[:200] + "..."
    raise UnknownModel(f"no model named {shown!r} and no such file; `vault-agent models list` shows the models found")


def path_kind(spec: str) -> tuple[str, Path | None]:
    """("file", absolute path), ("other", path) for a folder or device, or ("none", None): no such
    path, or not one this system can even look up (too long, a NUL byte, ~nosuchuser)."""
    try:
        path = Path(spec).expanduser().absolute()
        if path.is_file():
            return "file", path
        return ("other", path) if path.exists() else ("none", None)
    except (OSError, ValueError, RuntimeError):
        return "none", None


def require_servable(info: ModelInfo) -> ModelInfo:
    """The model, or UnusableModel with the one-line reason it cannot be served."""
    if info.can is None:
        raise UnusableModel(f"cannot use {info.name} ({info.path}): {info.why_not}")
    return info


def describe_file(path: Path, source: str = "path", cache: HeaderCache | None = None) -> ModelInfo:
    """A row for one file given by path (split parts found beside it)."""
    paths, problem = group_parts([path], siblings=True)[0]
    return describe(Found(path.name, source, paths, problem), cache)
