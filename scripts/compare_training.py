#!/usr/bin/env python3
"""Compares a repeated training run's logged losses with the first run's and prints, as JSON,
the repeat's wall seconds and how many logged losses agree exactly (all of them: the same
model came out again).

Usage: compare_training.py FIRST_PROGRESS_CSV REPEAT_PROGRESS_CSV WALL_SECONDS_FILE
"""

import csv
import json
import sys


def logged_losses(path):
    with open(path, newline="") as f:
        return [(row["step"], row["loss"]) for row in csv.DictReader(f)]


def main():
    first, repeat = logged_losses(sys.argv[1]), logged_losses(sys.argv[2])
    with open(sys.argv[3]) as f:
        wall = sum(int(line) for line in f if line.strip())
    compared = min(len(first), len(repeat))
    identical = sum(a == b for a, b in zip(first, repeat))
    print(json.dumps({"wall_seconds": wall, "logged_losses_compared": compared,
                      "logged_losses_identical": identical}))


if __name__ == "__main__":
    main()
