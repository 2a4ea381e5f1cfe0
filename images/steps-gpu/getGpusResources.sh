#!/usr/bin/env bash
# Spark's GPU discovery contract (spark.executor.resource.gpu.discoveryScript): print the executor's GPUs
# as {"name": "gpu", "addresses": ["0", "1", ...]}. The pod sees only the GPUs Kubernetes gave it.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
