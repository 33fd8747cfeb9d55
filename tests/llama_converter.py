"""llama.cpp's own converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py), the reference our
materialise + export are checked against.

They ship inside the llama-cpp-python source distribution of the installed version, so the
converter matches the llama.cpp the project serves with. Fetched once with pip into a cache
(VAULT_AGENT_TEST_CACHE, default ~/.cache/vault-agent-tests), only the needed files extracted.
A test skips, with the reason, only when the package registry cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

import pytest

WANTED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/gguf/")


def cache_dir() -> Path:
    return Path(os.environ.get("VAULT_AGENT_TEST_CACHE") or Path.home() / ".cache" / "vault-agent-tests")


def converter_dir() -> Path:
    """The folder holding convert_hf_to_gguf.py (fetched on first use)."""
    wanted = version("llama_cpp_python")
    dest = cache_dir() / f"llama.cpp-{wanted}"
    if (dest / "convert_lora_to_gguf.py").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                              "--quiet", f"llama-cpp-python=={wanted}", "-d", tmp],
                             capture_output=True, text=True, timeout=900)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            pytest.skip(f"cannot fetch llama-cpp-python {wanted}'s source from the package registry: "
                        f"{(got.stderr or got.stdout).strip().splitlines()[-1:]}")
        staged = Path(tmp) / "out"
        prefix = f"llama_cpp_python-{wanted}/vendor/llama.cpp/"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].startswith(WANTED) and (m.isfile() or m.isdir())]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(staged, members=members, filter="data")
        os.replace(staged, dest)  # another run sees the whole folder or none
    return dest


def run_converters(*runs: tuple[str, ...], base_pre: str | None = None) -> None:
    """Run converter scripts (each a tuple: script, *args) one after the other in one process, with
    their own gguf-py. `base_pre` answers the pre-tokenizer question (a tokenizer rebuilt from a GGUF
    hashes to no known one): the original model's name."""
    folder = converter_dir()
    patch = (f"import sys, runpy; sys.path[:0] = [{str(folder)!r}, {str(folder / 'gguf-py')!r}]\n"
             "import conversion.base as b\n")
    if base_pre is not None:
        patch += f"b.TextModel.get_vocab_base_pre = lambda self, tokenizer: {base_pre!r}\n"
    for script, *args in runs:
        patch += (f"sys.argv = {[script, *args]!r}\n"
                  f"runpy.run_path({str(folder / script)!r}, run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    got = subprocess.run([sys.executable, "-c", patch], capture_output=True, text=True, env=env, timeout=600)
    if got.returncode != 0:
        raise AssertionError(f"{[r[0] for r in runs]} failed:\n{got.stderr[-4000:]}")
