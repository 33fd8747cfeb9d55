#!/usr/bin/env bash
# One real loop on the sample vault: pairs -> retrain (-> export -> gate -> activate) -> eval with vs without.
set -euo pipefail
cd "$(dirname "$0")/.."
export VAULT_AGENT_HOME=/tmp/loop-home HF_HUB_OFFLINE=1
rm -rf $VAULT_AGENT_HOME /tmp/loop-vault; cp -r sample_vault /tmp/loop-vault
VA=.venv/bin/vault-agent
export VAULT_AGENT_LLM__CONTEXT_CHUNKS=2 VAULT_AGENT_LLM__MAX_TOKENS=96
export VAULT_AGENT_TRAIN__MIN_PAIRS=4 VAULT_AGENT_TRAIN__EPOCHS=2 VAULT_AGENT_TRAIN__MAX_LENGTH=768 VAULT_AGENT_TRAIN__LEARNING_RATE=0.0002
time $VA index --vault /tmp/loop-vault
time $VA pairs generate --vault /tmp/loop-vault --limit 24 --json > /tmp/loop-pairs.json
time $VA retrain --vault /tmp/loop-vault --json > /tmp/loop-retrain.json
$VA adapters list
time $VA eval --questions benchmarks/questions/sample_vault.jsonl --vault /tmp/loop-vault --adapter none --adapter v0001 > /tmp/loop-eval.txt
cat /tmp/loop-eval.txt
