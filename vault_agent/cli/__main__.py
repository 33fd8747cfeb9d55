"""`python -m vault_agent.cli` (the nightly retrain and the tests run the CLI this way)."""

from . import main

main()
