"""ms per face of the generator at batch 1 for several torch thread counts, with OpenMP's default
wait policy and with OMP_WAIT_POLICY=PASSIVE, on this machine as it is now (busy or not).

Each round runs one Python process per wait policy (torch reads OMP_WAIT_POLICY when it is
imported), and inside it the thread counts take turns; policies and counts alternate round after
round, so a change in the machine's load spreads over all of them instead of landing on one. "auto" is what `ented` would choose in that process
(model/threads.py); its row repeats the numbers of the count it chose.

    python scripts/thread_check.py                       # threads 1 and 2 (and auto); 4 rounds
    python scripts/thread_check.py --threads 1,2,4 --policies PASSIVE --weights path/to/set.json

Prints one Markdown table: median wall ms per face over every timed run (and min–max), the CPU
ms the process spent per face (all its threads: what it took from other processes), and the load
average before and after. Docs: docs/benchmarks.md, "Threads on a busy machine".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

POLICIES = ("default", "PASSIVE")

# Runs in the child: build the restorer the way `ented restore` does, then time restore() at
# batch 1 with each thread count in turn.
CHILD = r"""
import json, sys, time
import numpy as np, torch
from ented_cli.model.restorer import EntedRestorer
from ented_cli.model.threads import choose_threads
from ented_cli.model.weight_lookup import resolve_weights

counts, weights, rounds, runs, budget, mode = json.loads(sys.argv[1])
auto = choose_threads()
restorer = EntedRestorer(resolve_weights(weights), "cpu", "float32", 1)
face = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
refs = [["ref"]] if mode == "reference" else [[]]
restorer.add_reference("ref", face[0])
out = {str(n): {"wall": [], "cpu": []} for n in counts}
for _ in range(rounds):
    for n in counts:
        restorer.use_threads(n)
        restorer.restore(face, refs, 0.5)  # untimed: the thread pool settles
        start = time.perf_counter()
        for _ in range(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            restorer.restore(face, refs, 0.5)
            out[str(n)]["wall"].append((time.perf_counter() - wall) * 1000)
            out[str(n)]["cpu"].append((time.process_time() - cpu) * 1000)
            if time.perf_counter() - start > budget:
                break
print(json.dumps({"runs": out, "auto": [auto.count, auto.source]}))
"""


def run_policy(policy: str, counts: list[int], args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.pop("ENTED_THREADS", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    spec = [counts, args.weights, 1, args.runs, args.seconds, args.mode]
    cmd = [sys.executable, "-c", CHILD, json.dumps(spec)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"thread_check: OMP_WAIT_POLICY {policy} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="counts to time, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="processes per policy")
    parser.add_argument("--runs", type=int, default=4, help="timed faces per count and turn")
    parser.add_argument("--seconds", type=float, default=5.0, help="time cap per count and turn")
    parser.add_argument("--mode", choices=("reference", "blind"), default="blind")
    parser.add_argument("--weights", default=None, help="weight set (default: the bundled one)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="wait policies to try")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.threads.split(",")})

    load_before, started = os.getloadavg()[0], time.time()
    policies = args.policies.split(",")
    results: dict = {
        p: {"runs": {str(n): {"wall": [], "cpu": []} for n in counts}, "auto": []} for p in policies
    }
    for _ in range(args.rounds):
        for policy in policies:
            one = run_policy(policy, counts, args)
            for n, times in one["runs"].items():
                for key in ("wall", "cpu"):
                    results[policy]["runs"][n][key] += times[key]
            results[policy]["auto"].append(one["auto"])
    load_after = os.getloadavg()[0]

    print(
        f"generator at batch 1 ({args.mode}), {len(os.sched_getaffinity(0))} usable cores, "
        f"load {load_before:.2f} before and {load_after:.2f} after, "
        f"{time.time() - started:.0f} s, nice {os.nice(0)}"
    )
    print("| threads | OMP_WAIT_POLICY | ms/face (median) | min–max | CPU ms/face | runs |")
    print("|---|---|---:|---:|---:|---:|")
    for policy in policies:
        runs = results[policy]["runs"]
        choices = results[policy]["auto"]
        auto = choices[0][0] if len({c for c, _ in choices}) == 1 else 0
        source = "; ".join(s for _, s in choices)
        rows = [(str(n), str(n)) for n in counts]
        rows.append((f"auto → {auto or 'varied'}", str(auto) if str(auto) in runs else ""))
        for label, key in rows:
            if not key:
                print(f"| {label} | {policy} | (see below; time it with --threads) | | | |")
                continue
            wall, cpu = runs[key]["wall"], runs[key]["cpu"]
            print(
                f"| {label} | {policy} | {statistics.median(wall):,.0f} "
                f"| {min(wall):,.0f}–{max(wall):,.0f} | {statistics.median(cpu):,.0f} "
                f"| {len(wall)} |"
            )
        print(f"<!-- {policy}: auto chose {source} -->")


if __name__ == "__main__":
    main()
