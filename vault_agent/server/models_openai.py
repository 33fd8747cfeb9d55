"""Request and response bodies of the OpenAI-compatible API (/v1), as the OpenAI clients send and
read them. Fields a client may send that vault-agent does not use are accepted and ignored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from .validation import NOT_BLANK

VAULT_MODEL = "vault-agent"  # retrieval from the vault + the active adapter: what /ask does
PLAIN_MODEL = "vault-agent-plain"  # the same model and adapter, the client's messages only
MODEL_IDS = (VAULT_MODEL, PLAIN_MODEL)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(..., description="When this daemon started (Unix seconds).")
    owned_by: str = "vault-agent"
    served_model: str | None = Field(None, description="The GGUF file behind it now (GET /models lists the others).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = Field(None, description="A string or text parts (joined).")

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model: str = Field(..., description=f"{VAULT_MODEL} (answers from the vault) or {PLAIN_MODEL} (no retrieval).")
    messages: list[ChatMessage] = Field(..., min_length=1, description="The last one is the user's question.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, description="Longest answer (default llm.max_tokens).")
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens; wins if both are given.")
    temperature: float | None = Field(None, ge=0, le=2, description="Default llm.temperature.")
    top_p: float | None = Field(None, ge=0, le=1, description="Accepted and ignored (llama.cpp's default applies).")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings; the answer ends before the first.")
    seed: int | None = None

    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class VaultAgentExtra(BaseModel):
    """What OpenAI clients ignore and vault-agent clients use: rate the answer with POST /feedback
    {"response_id": ...}."""

    response_id: str
    citations: list[dict] = Field(..., description="The notes the answer cites, as in /ask (empty without retrieval).")
    adapter_version: str | None
    index_state: dict = Field(..., description="The index at retrieval, as in /ask ({} without retrieval).")


class ChatCompletion(BaseModel):
    id: str = Field(..., description="chatcmpl-...; rate the answer by vault_agent.response_id.")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    vault_agent: VaultAgentExtra


# a text to embed: at least one character str.strip() keeps (the same rule as a question's)
EmbeddingText = Annotated[str, StringConstraints(min_length=1, pattern=NOT_BLANK)]


class EmbeddingRequest(BaseModel):
    input: EmbeddingText | Annotated[list[EmbeddingText], Field(min_length=1, max_length=2048)] = Field(
        ..., description="One text or a list of up to 2,048 (not token arrays); none blank.")
    model: str | None = Field(None, description="Any name: the daemon's embedding model answers.")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32.")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str = Field(..., description="The daemon's embedding model (index.embedding_model).")
    usage: EmbeddingUsage


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(..., description="invalid_request_error, authentication_error or server_error.")
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail
