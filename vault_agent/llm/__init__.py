"""The local language model: one llama.cpp engine with a hot-swappable LoRA slot (backend.py)
and the prompts that turn retrieved notes into a cited answer (prompts.py)."""
