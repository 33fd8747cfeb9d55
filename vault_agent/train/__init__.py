"""Training: synthetic pairs, DPO, GGUF LoRA export."""
