#!/usr/bin/env python3
"""Sums fuzz/results.csv per target as a Markdown table: runs, wall and CPU hours, executions,
runs that exited non-zero, and the CPU hours since the target's last such run (what counts
towards an hour without a crash). The CSV's `seconds` is the time a run was given; one that
exits non-zero stopped early, so its wall time is not counted.

Usage: fuzz/summary.py [RESULTS_CSV]
"""

import csv
import os
import sys


def summarise(rows):
    """Per-target totals, in the order targets first appear."""
    out = {}
    for row in rows:
        t = out.setdefault(row["target"], {"runs": 0, "wall": 0, "cpu": 0, "execs": 0,
                                           "failed": 0, "clean_cpu": 0})
        cpu = int(row["cpu_seconds"] or 0)
        t["runs"] += 1
        t["cpu"] += cpu
        t["execs"] += int(row["executions"])
        if row["status"] != "0":
            t["failed"] += 1
            t["clean_cpu"] = 0
        else:
            t["wall"] += int(row["seconds"])
            t["clean_cpu"] += cpu
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                              "results.csv")
    with open(path, newline="") as f:
        totals = summarise(csv.DictReader(f))
    print("| target | runs | wall h | CPU h | executions | runs exiting non-zero "
          "| CPU h since the last such run |")
    print("|---|---|---|---|---|---|---|")
    for name, t in totals.items():
        print(f"| {name} | {t['runs']} | {t['wall'] / 3600:.2f} | {t['cpu'] / 3600:.2f} "
              f"| {t['execs']:,} | {t['failed']} | {t['clean_cpu'] / 3600:.2f} |")
    print("\nCPU h counts runs that recorded it (the first runs of pickle, torch_archive and "
          "safetensors did not).")


if __name__ == "__main__":
    main()
