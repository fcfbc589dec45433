#!/usr/bin/env python3
"""Prints scripts/bench-vs-peers.sh's table from the JSON lines
time_to_target.py wrote: each run per seed, the medians over seeds, and each
peer against oxray (peer wall / oxray wall, oxray env steps/s / peer's).

    summarize.py RESULTS.jsonl TARGET_DESCRIPTION
"""
import json
import statistics
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} RESULTS.jsonl TARGET_DESCRIPTION")
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    print(f"\ntarget: {sys.argv[2]}; wall and steps/s from process start "
          "(unsolved rows: at the step limit or time limit)")
    print(f"{'run':<16} {'seed':>4} {'solved':>6} {'env steps':>10} {'wall s':>8} {'steps/s':>9}")
    for r in rows:
        print(f"{r['run']:<16} {r['seed']:>4} {'yes' if r['solved'] else 'NO':>6} "
              f"{r['steps']:>10} {r['wall_s']:>8.1f} {r['steps_per_s']:>9.0f}")
    medians = {}
    print(f"\nmedians over seeds\n{'run':<16} {'solved':>6} {'env steps':>10} {'wall s':>8} {'steps/s':>9}")
    for run in runs:
        mine = [r for r in rows if r["run"] == run]
        medians[run] = {k: statistics.median(r[k] for r in mine) for k in ("steps", "wall_s", "steps_per_s")}
        m = medians[run]
        print(f"{run:<16} {sum(r['solved'] for r in mine):>2}/{len(mine):<3} {m['steps']:>10.0f} "
              f"{m['wall_s']:>8.1f} {m['steps_per_s']:>9.0f}")
    if "oxray" in medians:
        ox = medians["oxray"]
        print("\nratios of medians (a peer's unsolved runs count with their time at the limit)")
        for run in runs:
            if run != "oxray":
                p = medians[run]
                # A peer that never reported a step has no throughput to compare.
                speed = f"{ox['steps_per_s'] / p['steps_per_s']:6.1f}x" if p["steps_per_s"] else "   n/a"
                print(f"{run:<16} peer wall / oxray wall {p['wall_s'] / ox['wall_s']:6.1f}x   "
                      f"oxray steps/s / peer steps/s {speed}")


if __name__ == "__main__":
    main()
