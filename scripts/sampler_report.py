#!/usr/bin/env python3
"""Table and plot of the sampler study (scripts/sampler_study.sh) from its result files
(standard library only).

usage: sampler_report.py [RESULTS_DIR] [REPORT.md]

Two studies, each with its table and plot (FID against network evaluations, log x axis, drawn by
`iddpm plot`, found through $IDDPM, with the plot's data as CSV beside it in RESULTS_DIR/../):
- the shipped model: RESULTS_DIR/samplers/<sampler>_<nfe>[_lambda<λ>].json and, for the paper's
  samplers, the reproduction study's hybrid_cosine cells (ancestral at 25/50/100 steps, DDIM at
  25/50), between REPORT.md's BEGIN SAMPLERS and END SAMPLERS markers;
- the one-channel model (STUDY_GREY=1): RESULTS_DIR/samplers_grey/, its own ancestral and DDIM
  cells included, between the BEGIN SAMPLERS GREY and END SAMPLERS GREY markers, when present;
- the same model trained on to N steps (STUDY_GREY_STEPS=N): RESULTS_DIR/samplers_grey_N_steps/,
  between the BEGIN SAMPLERS GREY N and END SAMPLERS GREY N markers;
- every sampler's wall time per 1,000 images from one quiet run (scripts/sampler_timing.sh,
  RESULTS_DIR/sampler_timing.csv), between the BEGIN SAMPLER TIMING and END SAMPLER TIMING
  markers, when both are present.
Missing cells show as "pending".
"""

import csv
import json
import os
import re
import subprocess
import sys

NFES = [5, 10, 15, 20, 25]
SOLVERS = [("SDE-DPM-Solver++(2M)", "sde-dpm++2m"), ("UniPC (bh2)", "unipc"),
           ("DPM-Solver++(2M)", "dpm++2m"), ("DPM-Solver++(3M)", "dpm++3m")]
# Solvers whose grid starts below the signal-free last steps (--lambda_min_clipped).
CLIPPED = [("SDE-DPM-Solver++(2M), λ ≥ −5.1", "sde-dpm++2m", "-5.1"),
           ("SDE-DPM-Solver++(2M), λ ≥ −3", "sde-dpm++2m", "-3"),
           ("DPM-Solver++(2M), λ ≥ −3", "dpm++2m", "-3")]
# The reproduction study's cells of the same (shipped) model, by network evaluations.
PAPER = [("ancestral (respaced)", "fid_learned_{}.json", [25, 50, 100]),
         ("DDIM, η = 0", "fid_learned_ddim{}.json", [25, 50])]


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def grey_cells(results, study="samplers_grey"):
    """{label: {nfe: result}} for a one-channel model's study (folder `study`), whose paper
    samplers it ran, with its --lambda_min_clipped and unclipped (--clip_denoised False) cells
    as rows of their own."""
    folder = os.path.join(results, study)
    names = dict((name, label) for label, name in
                 SOLVERS + [("ancestral (respaced)", "ancestral"), ("DDIM, η = 0", "ddim")])
    order = list(names.values())
    rows = {}
    for entry in sorted(os.listdir(folder)):
        match = re.fullmatch(r"(.+)_(\d+)(?:_lambda(-?[0-9.]+))?(_noclip)?\.json", entry)
        if not match or match.group(1) not in names:
            continue
        name, nfe, lam, noclip = match.groups()
        base = names[name]
        label = base + (f", λ ≥ {lam.replace('-', '−')}" if lam else "") + \
            (", x̂₀ not clipped" if noclip else "")
        rows.setdefault((order.index(base), lam or "", noclip or "", label), {})[int(nfe)] = \
            load(os.path.join(folder, entry))
    return {label: found for (_, _, _, label), found in sorted(rows.items())}


def cells(results):
    """{label: {nfe: result}} for every sampler, the paper's included."""
    out = {}
    for label, name in SOLVERS:
        out[label] = {n: r for n in NFES
                      if (r := load(os.path.join(results, "samplers", f"{name}_{n}.json")))}
    for label, name, lam in CLIPPED:
        found = {n: r for n in NFES
                 if (r := load(os.path.join(results, "samplers", f"{name}_{n}_lambda{lam}.json")))}
        if found:
            out[label] = found
    for label, pattern, nfes in PAPER:
        out[label] = {n: r for n in nfes
                      if (r := load(os.path.join(results, "hybrid_cosine", pattern.format(n))))}
    # The study's own cells of the paper's sampler at fewer steps join its row.
    for n in NFES:
        if n not in out[PAPER[0][0]] and (r := load(os.path.join(results, "samplers",
                                                                   f"ancestral_{n}.json"))):
            out[PAPER[0][0]][n] = r
    return out


def fid_text(r):
    if r is None:
        return "pending"
    sd = r.get("fid_std")
    text = f"{r['fid']:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")
    if r.get("sfid") is not None:
        text += f" (sFID {r['sfid']:.1f})"
    return text


def table(all_cells, pending=True):
    """The FID table, then precision, recall and time; unmeasured planned cells show as
    "pending" when `pending`, else as "–"."""
    nfes = sorted({n for c in all_cells.values() for n in c} | set(NFES))
    lines = ["| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
             "| --- |" + " --- |" * len(nfes)]
    solvers = {label for label, _ in SOLVERS}
    for label, c in all_cells.items():
        row = [fid_text(c[n]) if n in c else ("pending" if pending and label in solvers
                                              and n in NFES else "–") for n in nfes]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines += ["", "Precision, recall and sampling wall time per 1,000 images as each cell recorded "
              "it (2 cores; the cells ran under different loads, so times compare only roughly):",
              "",
              "| sampler | NFE | precision | recall | s / 1,000 images |", "| --- | --- | --- | --- | --- |"]
    for label, c in all_cells.items():
        for n in sorted(c):
            r = c[n]
            per = r.get("seconds_per_1000_images") or r.get("sampling_seconds", 0) / 2.0
            lines.append(f"| {label} | {n} | {r.get('precision', float('nan')):.3f} | "
                         f"{r.get('recall', float('nan')):.3f} | {per:.0f} |")
    return "\n".join(lines)


def plot(all_cells, out_dir, name, title):
    series = []
    for label, c in all_cells.items():
        if not c:
            continue
        path = os.path.join(out_dir, name + "_" + "".join(ch if ch.isalnum() else "_"
                                                            for ch in label) + ".csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["nfe", "fid"])
            w.writerows(sorted((n, r["fid"]) for n, r in c.items()))
        series.append(f"{label}={path}:nfe:fid")
    if not series:
        return None
    output = os.path.join(out_dir, name + ".png")
    args = ["--output", output, "--title", title,
            "--x_label", "network evaluations (log scale)", "--y_label", "FID (log scale)",
            "--log_x", "--log_y", "--points"]
    for s in series:
        args += ["--series", s]
    subprocess.run([os.environ.get("IDDPM", "target/release/iddpm"), "plot", *args], check=True)
    return output


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else "docs/reproduction/results"
    report = sys.argv[2] if len(sys.argv) > 2 else "docs/reproduction.md"
    out_dir = os.path.dirname(os.path.normpath(results))
    with open(report) as f:
        doc = f.read()
    studies = [("SAMPLERS", cells(results), "samplers_fid_vs_nfe",
                "Shipped model: FID against network evaluations (2,000 samples)", True)]
    if os.path.isdir(os.path.join(results, "samplers_grey")):
        studies.append(("SAMPLERS GREY", grey_cells(results), "samplers_grey_fid_vs_nfe",
                        "One-channel model: FID against network evaluations (2,000 samples)",
                        False))
    for entry in sorted(os.listdir(results)):
        if match := re.fullmatch(r"samplers_grey_(\d+)_steps", entry):
            steps = match.group(1)
            studies.append((f"SAMPLERS GREY {steps}", grey_cells(results, entry),
                            f"{entry}_fid_vs_nfe",
                            f"One-channel model, {int(steps):,} training steps: FID against "
                            "network evaluations (2,000 samples)", False))
    for marker, all_cells, name, title, pending in studies:
        picture = plot(all_cells, out_dir, name, title)
        text = table(all_cells, pending)
        if picture:
            rel = os.path.relpath(picture, os.path.dirname(report))
            text += f"\n\n![{title}]({rel})"
        doc = replace_between(doc, marker, text, report)
    timing = timing_table(results)
    if timing and "<!-- BEGIN SAMPLER TIMING -->" in doc:
        doc = replace_between(doc, "SAMPLER TIMING", timing, report)
    with open(report + ".tmp", "w") as f:
        f.write(doc)
    os.replace(report + ".tmp", report)


def timing_table(results):
    """Seconds per 1,000 images by sampler (rows) and network evaluations (columns), from
    sampler_timing.csv; None when there is no such file."""
    path = os.path.join(results, "sampler_timing.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    nfes = sorted({int(r["nfe"]) for r in rows})
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    per = {(r["sampler"], int(r["nfe"])): float(r["seconds_per_1000_images"]) for r in rows}
    first = rows[0]
    lines = [f"Sampling wall time per 1,000 images, seconds: one run of "
             f"`scripts/sampler_timing.sh` on idle cores ({first['images']} images per cell, "
             f"one batch; `lscpu` \"{first['machine']}\", 2 cores, {first['date']}):", "",
             "| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
             "| --- |" + " --- |" * len(nfes)]
    for sampler in samplers:
        cells = [f"{per[(sampler, n)]:.0f}" if (sampler, n) in per else "–" for n in nfes]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_between(doc, marker, text, report):
    """doc with the part between <!-- BEGIN marker --> and <!-- END marker --> set to text."""
    begin, end = f"<!-- BEGIN {marker} -->", f"<!-- END {marker} -->"
    if begin not in doc:
        sys.exit(f"{report} has no {begin} marker")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{text}\n{end}{tail}"


if __name__ == "__main__":
    main()
