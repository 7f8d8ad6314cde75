#!/usr/bin/env python3
"""Tables and plots of the reproduction study from its result files (standard library only).

usage: reproduction_report.py RESULTS_DIR PLOT_DIR REPORT.md

Reads RESULTS_DIR/ARM/{train,nll_*,fid_*}.json and progress.csv as scripts/reproduce.sh writes
them, writes the plots' data as CSV and the plots as PNG into PLOT_DIR (drawn by `iddpm plot`,
found through $IDDPM), and replaces the part of REPORT.md between its BEGIN TABLES and END
TABLES markers with the tables and plots. Missing results show as "pending", so the report can
be rebuilt after every finished stage.
"""

import csv
import json
import math
import os
import subprocess
import sys

T = 100
FEWER = ["25", "50", "100"]


def load(results, arm, name):
    path = os.path.join(results, arm, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def nll_cell(results, arm, variant):
    r = load(results, arm, f"nll_{variant}.json")
    if r is None:
        return "pending"
    return f"{r['bpd']:.3f} ± {r['bpd_stderr']:.3f}"


def nll_runs_cell(results, arm, variant):
    """The NLL cell, with the second run's bound after it when the arm was trained again."""
    again = load(results, arm, f"nll_{variant}_again.json")
    first = nll_cell(results, arm, variant)
    return first if again is None else f"{first} (second run {nll_cell(results, arm, variant + '_again')})"


def fid_result(results, arm, variant, steps):
    return load(results, arm, f"fid_{variant}_{steps}.json")


def fid_cell(results, arm, variant, steps):
    r = fid_result(results, arm, variant, steps)
    if r is None:
        return "pending"
    # Cells evaluated with --fid_bootstrap carry the FID's bootstrap standard deviation.
    sd = r.get("fid_std")
    return f"{r['fid']:.2f}" if sd is None else f"{r['fid']:.2f} ± {sd:.2f}"


def fraction(x):
    """Three decimals, or enough to show the first digit of a small nonzero fraction."""
    places = 3 if x == 0 or x >= 0.0005 else -math.floor(math.log10(x))
    return f"{x:.{places}f}"


def pr_cell(results, arm, variant, steps):
    r = fid_result(results, arm, variant, steps)
    return "pending" if r is None else f"{fraction(r['precision'])} / {fraction(r['recall'])}"


OBJECTIVES = [
    ("L_simple, fixed Σ = β (large)", "simple_cosine", "large"),
    ("L_simple, fixed Σ = β̃ (small)", "simple_cosine", "small"),
    ("L_hybrid, learned Σ", "hybrid_cosine", "learned"),
    ("L_vlb, learned Σ, loss-second-moment sampler", "vlb_cosine_is", "learned"),
    ("L_vlb, learned Σ, uniform timesteps", "vlb_cosine_uniform", "learned"),
]

SCHEDULES = [
    ("L_hybrid", "hybrid_linear", "hybrid_cosine", "learned"),
    ("L_simple, Σ = β̃ (small)", "simple_linear", "simple_cosine", "small"),
    ("L_simple, Σ = β (large)", "simple_linear", "simple_cosine", "large"),
]

# (label, arm, variant, step prefix): the curves of the fewer-steps figure. The plot's font
# does not place combining marks, so the labels avoid β̃.
CURVES = [
    ("L_hybrid, learned Σ", "hybrid_cosine", "learned", ""),
    ("L_simple, large fixed Σ = β", "simple_cosine", "large", ""),
    ("L_simple, small fixed Σ (posterior variance)", "simple_cosine", "small", ""),
    ("DDIM on the L_hybrid model", "hybrid_cosine", "learned", "ddim"),
]


def steps_key(prefix, steps):
    """The FID cell's name: "25" for the model's own sampler, "ddim25" for DDIM."""
    return f"{prefix}{steps}"


def tables(results):
    out = [
        "### Objectives (cosine schedule)",
        "",
        f"| objective | test NLL, bits/dim ({T}-step bound, ± s.e.) | FID ({T} steps) | precision / recall |",
        "|---|---|---|---|",
    ]
    for label, arm, variant in OBJECTIVES:
        fid = f"{fid_cell(results, arm, variant, T)} | {pr_cell(results, arm, variant, T)}"
        if load(results, arm, f"nll_{variant}_again.json") is None:
            out.append(f"| {label} | {nll_cell(results, arm, variant)} | {fid} |")
            continue
        # Trained again on a new machine: the FID cells sampled the second model, so each
        # run's row shows its own bound.
        out.append(f"| {label}, first run | {nll_cell(results, arm, variant)} | not sampled | |")
        out.append(f"| {label}, second run | {nll_cell(results, arm, variant + '_again')} | {fid} |")
    out += [
        "",
        "### Noise schedules (same T)",
        "",
        "| objective | NLL linear | NLL cosine | FID linear | FID cosine |",
        "|---|---|---|---|---|",
    ]
    for label, lin, cos, variant in SCHEDULES:
        # simple_linear is an extra arm: its rows show once it has run.
        if lin == "simple_linear" and not os.path.isdir(os.path.join(results, lin)):
            continue
        out.append(
            f"| {label} | {nll_runs_cell(results, lin, variant)} | {nll_runs_cell(results, cos, variant)} | "
            f"{fid_cell(results, lin, variant, T)} | {fid_cell(results, cos, variant, T)} |"
        )
    out += [
        "",
        "### FID with fewer sampling steps (cosine schedule)",
        "",
        "| sampler | " + " | ".join(f"{s} steps" for s in FEWER) + " |",
        "|---|" + "---|" * len(FEWER),
    ]
    for label, arm, variant, prefix in CURVES:
        cells = [
            "not run" if prefix and s == str(T) else fid_cell(results, arm, variant, steps_key(prefix, s))
            for s in FEWER
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += [
        "",
        "### Compute (wall seconds on the 2-core machine)",
        "",
        "| arm | training | NLL | sampling + FID | total | training again |",
        "|---|---|---|---|---|---|",
    ]
    grand = retrained = 0
    for arm in sorted(os.listdir(results)):
        if not os.path.isdir(os.path.join(results, arm)):
            continue
        train = (load(results, arm, "train.json") or {}).get("wall_seconds", 0)
        nll = fid = 0
        for name in os.listdir(os.path.join(results, arm)):
            if name.startswith("nll_") and name.endswith(".json"):
                nll += load(results, arm, name).get("wall_seconds", 0)
            if name.startswith("fid_") and name.endswith(".json"):
                fid += load(results, arm, name).get("wall_seconds", 0)
        total = train + nll + fid
        grand += total
        # An arm trained again on a new machine (its checkpoints stay out of git): not part of
        # the study's own budget, but compute it took all the same.
        again = load(results, arm, "retrain.json")
        again_cell = "" if again is None else (
            f"{again['wall_seconds']} ({again['logged_losses_identical']} of "
            f"{again['logged_losses_compared']} logged losses identical)")
        retrained += 0 if again is None else again["wall_seconds"]
        out.append(f"| {arm} | {train} | {nll} | {fid} | {total} ({total / 3600:.2f} h) "
                   f"| {again_cell} |")
    out.append(f"| **all** | | | | **{grand} ({grand / 3600:.2f} h)** "
               f"| {retrained} ({retrained / 3600:.2f} h) |")
    return "\n".join(out) + "\n"


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def plot(output, title, x_label, y_label, series, *flags):
    """Draws `series` ("LABEL=FILE:X:Y" strings) with `iddpm plot`; nothing when there are none."""
    if not series:
        return
    args = ["--output", output, "--title", title, "--x_label", x_label, "--y_label", y_label, *flags]
    for s in series:
        args += ["--series", s]
    iddpm = os.environ.get("IDDPM", "target/release/iddpm")
    subprocess.run([iddpm, "plot", *args], check=True)


def fid_plot(results, out_dir):
    series = []
    for label, arm, variant, prefix in CURVES:
        rows = []
        for s in FEWER:
            r = fid_result(results, arm, variant, steps_key(prefix, s))
            if r is not None:
                rows.append((int(s), r["fid"]))
        if rows:
            path = os.path.join(out_dir, f"fid_steps_{arm}_{variant}_{prefix or 'ancestral'}.csv")
            write_csv(path, ["steps", "fid"], rows)
            series.append(f"{label}={path}:steps:fid")
    plot(os.path.join(out_dir, "fid_vs_steps.png"),
         "FID against sampling steps (Fashion-MNIST 32x32, 2,000 samples)",
         "sampling steps", "FID (log scale)", series, "--points", "--log_y")


VLB_ARMS = [("loss-second-moment sampler", "vlb_cosine_is"),
            ("uniform timesteps", "vlb_cosine_uniform")]


def training_logs(results, arm):
    """(run label, progress.csv) of each training run of an arm: the first, and the run that
    trained it again on a new machine when there was one."""
    runs = [("first run", "progress.csv"), ("second run", "retrain_progress.csv")]
    return [(run, os.path.join(results, arm, name)) for run, name in runs
            if os.path.exists(os.path.join(results, arm, name))]


def vlb_plot(results, out_dir):
    series = []
    for label, arm in VLB_ARMS:
        for run, path in training_logs(results, arm):
            series.append(f"L_vlb, {label}, {run}={path}:step:loss")
    plot(os.path.join(out_dir, "vlb_loss.png"),
         "L_vlb training loss (mean over each logging interval)",
         "training step", "L_vlb (bits per dimension)", series, "--log_y")


def loss_noise(path):
    """Mean logged loss over the second half of training, and the standard deviation of the
    log-loss change from one log to the next there; None before two such changes exist."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    tail = losses[len(losses) // 2:]
    diffs = [math.log(b) - math.log(a) for a, b in zip(tail, tail[1:]) if a > 0 and b > 0]
    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return sum(tail) / len(tail), sd


def noise_table(results):
    """Step-to-step variability of the logged L_vlb, for every training run of both arms."""
    lines = []
    for label, arm in VLB_ARMS:
        logs = training_logs(results, arm) or [("first run", None)]
        for run, path in logs:
            noise = loss_noise(path) if path else None
            cells = ("pending", "pending") if noise is None else (f"{noise[0]:.4f}", f"{noise[1]:.3f}")
            lines.append(f"| {label} | {run} | {cells[0]} | {cells[1]} |")
    return ("\n### L_vlb gradient noise\n\n"
            "| timestep sampling | training run | mean logged L_vlb, second half "
            "| s.d. of log-loss change between logs |\n"
            "|---|---|---|---|\n" + "\n".join(lines) + "\n")


def pictures(out_dir, report):
    """Markdown links to the plots that exist, relative to the report."""
    rel = os.path.relpath(out_dir, os.path.dirname(report) or ".")
    lines = []
    for name, alt in [("fid_vs_steps.png", "FID against sampling steps"),
                      ("vlb_loss.png", "L_vlb loss with and without importance sampling")]:
        if os.path.exists(os.path.join(out_dir, name)):
            lines.append(f"![{alt}]({rel}/{name})")
    return "\n" + "\n\n".join(lines) + "\n" if lines else ""


def replace_between_markers(report, text):
    with open(report) as f:
        doc = f.read()
    begin = doc.index("<!-- BEGIN TABLES")
    begin = doc.index("\n", begin) + 1
    end = doc.index("<!-- END TABLES -->")
    tmp = report + ".tmp"
    with open(tmp, "w") as f:
        f.write(doc[:begin] + text + doc[end:])
    os.replace(tmp, report)


def main():
    results, out_dir, report = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)
    fid_plot(results, out_dir)
    vlb_plot(results, out_dir)
    replace_between_markers(report, tables(results) + noise_table(results) + pictures(out_dir, report))


if __name__ == "__main__":
    main()
