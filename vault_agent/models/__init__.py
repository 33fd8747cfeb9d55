"""The GGUF models on this machine (models list), choosing one (models use) and the daemon's switch.

gguf_header reads headers only; stores finds files in Ollama, LM Studio, the Hugging Face cache and
llm.model_dirs; info describes one; catalog lists and finds; fingerprint says which base an adapter
was trained on; load_check asks llama.cpp; switch ties a choice to the daemon and config.toml.
"""
