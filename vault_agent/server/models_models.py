"""Request and response bodies of GET /models and POST /models/use (models/info.py's rows)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .validation import RequestBody


class ModelRow(BaseModel):
    name: str = Field(..., description="What `models use` and POST /models/use take: Ollama's model:tag, "
                                       "LM Studio's publisher/model/file.gguf, org/repo/file.gguf, 'bundled'.")
    source: str = Field(..., description="bundled, folder (llm.model_dirs), ollama, lmstudio, huggingface, "
                                         "config or path.")
    path: str
    architecture: str | None
    parameters: int | None
    quantization: str | None
    context_length: int | None
    size_bytes: int | None
    chat_template: bool
    can: str | None = Field(..., description="'serve', 'serve+train', or null: cannot be served.")
    why_not: str | None = Field(..., description="Why not serve+train (or why not served at all).")
    parts: int
    served: bool


class ModelListing(BaseModel):
    served: str | None = Field(..., description="The served model's file.")
    models: list[ModelRow]


class UseModel(RequestBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(..., min_length=1, max_length=4096, description="A name from GET /models or a GGUF file's path.")


class ModelUsed(BaseModel):
    model: ModelRow
    switch_ms: float = Field(..., description="Load and swap time; answers kept flowing on the old model meanwhile.")
    notice: str | None = Field(..., description="Set when the active adapter, trained on another base, was switched off.")
    config_file: str = Field(..., description="Where llm.model_path was saved for the next start.")
    warning: str | None = Field(..., description="Set when an environment variable overrides config.toml.")
