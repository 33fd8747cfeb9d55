"""`retrain` refuses a served model the loop cannot train in one line, before anything loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def write_gguf(path, arch: str, **fields):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch=arch)
    for key, value in fields.items():
        (writer.add_uint32 if isinstance(value, int) else writer.add_string)(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch, fields, reason", [
    ("mamba", {"tokenizer.chat_template": "{{ messages }}"}, "architecture 'mamba' is not one the loop trains"),
    ("qwen2", {"qwen2.expert_count": 8, "tokenizer.chat_template": "x"}, "mixture-of-experts"),
    ("qwen2", {}, "no chat template"),
])
def test_retrain_refuses_an_untrainable_served_model_in_one_line(agent_home, tmp_path, arch, fields, reason):
    model = tmp_path / "model.gguf"
    write_gguf(model, arch, **fields)
    env = {**os.environ, "VAULT_AGENT_LLM__MODEL_PATH": str(model)}
    proc = subprocess.run([sys.executable, "-m", "vault_agent.cli", "retrain"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "model.gguf" in lines[0], proc.stderr
    assert not (agent_home / "data" / "train-base").exists()  # nothing was materialised
