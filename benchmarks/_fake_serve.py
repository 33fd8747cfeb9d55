"""`vault-agent serve` with the deterministic FakeBackend in place of llama.cpp: what a benchmark's
--smoke run starts when it measures everything but the model (feedback writes), in seconds.

    python benchmarks/_fake_serve.py --vault DIR --port N   (settings from VAULT_AGENT_* as usual)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from vault_agent.config import load_settings
    from vault_agent.daemon import Daemon
    from vault_agent.llm.fake import FakeBackend
    from vault_agent.paths import app_dirs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(vault=Path(args.vault), server={"port": args.port})
    Daemon(settings, Path(args.vault).resolve(), app_dirs(), backend=FakeBackend()).build().serve()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # as `vault-agent serve` ends on Ctrl-C (after a clean shutdown)
        sys.exit(130)
