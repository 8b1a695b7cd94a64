#!/usr/bin/env bash
# Regenerate every bundled workload exactly (same seed, same flags => same rows and metadata;
# same bytes with the same pyarrow and numpy). Each file's metadata repeats its command
# (`kairosbench.workload` -> "command"), and tests/test_workload_bundled.py reruns it.
set -euo pipefail
cd "$(dirname "$0")"
gen() { kairosbench workload generate "$@"; }

# Small: a live emulated run with --time-scale finishes in a few minutes.
gen --kind swe   --sessions 12 --rate 0.2 --seed 101 --min-turns 5 --max-turns 15 --context-window 32768 --name swe-small   -o swe-small.parquet
gen --kind de    --sessions 12 --rate 0.2 --seed 102 --min-turns 5 --max-turns 15 --context-window 32768 --name de-small    -o de-small.parquet
gen --kind mixed --sessions 16 --rate 0.2 --seed 103 --min-turns 5 --max-turns 15 --context-window 32768 --name mixed-small -o mixed-small.parquet

# KAIROS-sized: Poisson 0.08 sessions/s for about an hour (300 arrivals), turns mean 37, heavy tail.
gen --kind swe   --sessions 300 --rate 0.08 --seed 201 --name swe-kairos   -o swe-kairos.parquet
gen --kind de    --sessions 300 --rate 0.08 --seed 202 --name de-kairos    -o de-kairos.parquet
gen --kind mixed --sessions 300 --rate 0.08 --seed 203 --name mixed-kairos -o mixed-kairos.parquet
