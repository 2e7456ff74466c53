#!/usr/bin/env python3
# connpool - turns workloads_bench's JSON into the results table and the chart's data files.
# SPDX-License-Identifier: MIT
#
# Usage: bench/report.py <workloads.json> <out-dir> [--machine <machine.txt>] [--command <cmd>]
# Reads the aggregates of a run made with --benchmark_repetitions=N
# --benchmark_report_aggregates_only=true and writes, into <out-dir>:
#   results.md  medians per workload and pool, ratios against the textbook pool and SOCI, and
#               issue 3's targets beside them (bench/README.md embeds this file);
#   w2.dat      W2 cycles/s per thread count, one column per pool (for plot.gp);
#   w3.dat      W3 cycles/s and p99 acquire wait per pool (for plot.gp);
#   w3_waits.dat  W3's wait distribution as connpool's wait_time histogram recorded it: per
#               bucket bound (us), the share of acquires that waited at most that long, one
#               column per connpool pool (for plot.gp).
# Python 3 standard library only.

import argparse
import json
import math
import os
import sys

POOLS = ["connpool", "textbook", "soci"]  # W1, W2, W4, W4b
W3_POOLS = ["connpool_defaults", "connpool_fifo", "connpool_barging", "connpool_barging_1ms",
            "connpool_barging_2ms", "connpool_barging_10ms", "textbook", "soci"]
TITLE = {"connpool": "connpool", "connpool_defaults": "connpool default options",
         "connpool_fifo": "connpool fifo",
         "connpool_barging": "connpool bounded_barging",
         "connpool_barging_1ms": "connpool bounded_barging 1 ms",
         "connpool_barging_2ms": "connpool bounded_barging 2 ms",
         "connpool_barging_10ms": "connpool bounded_barging 10 ms", "textbook": "textbook",
         "soci": "SOCI"}


def load(path):
    """{(workload, pool, arg): {aggregate: {field: value}}}, arg = size, thread count or None."""
    with open(path) as f:
        data = json.load(f)
    runs = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "aggregate" or b.get("error_occurred"):
            continue
        parts = b["run_name"].split("/")
        workload, pool, arg = parts[0], parts[1], None
        for p in parts[2:]:
            if p.startswith("threads:"):
                arg = int(p.split(":")[1])
            elif p.isdigit():
                arg = int(p)
        runs.setdefault((workload, pool, arg), {})[b["aggregate_name"]] = b
    return data["context"], runs


def get(runs, workload, pool, arg, field, aggregate="median"):
    run = runs.get((workload, pool, arg), {}).get(aggregate)
    if run is None or field not in run:
        return None
    return run[field]


def fmt(x, digits=3):
    """A figure with `digits` significant digits, without exponent for everyday magnitudes."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:,.{decimals}f}"


def cv(runs, workload, pool, arg, field):
    c = get(runs, workload, pool, arg, field, "cv")
    return "" if c is None else f" ±{c * 100:.0f}%"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def met(ok):
    return "-" if ok is None else ("yes" if ok else "**no**")


def table_uncontended(runs, pools):
    """W1, W2, W4, W4b: one row per case, one column per pool, then ratios and targets."""
    has_soci = "soci" in pools
    head = ["Workload", "Unit"] + [TITLE[p] for p in pools] + ["connpool vs textbook"]
    if has_soci:
        head.append("connpool vs SOCI")
    head += ["Target (issue 3)", "Met"]
    rows = []

    def time_row(label, workload, arg, target=None, limit=None):
        values = {p: get(runs, workload, p, arg, "cpu_time") for p in pools}
        cells = [label, "ns/cycle, lower is better"]
        cells += [fmt(values[p]) + cv(runs, workload, p, arg, "cpu_time") if values[p] else "-"
                  for p in pools]
        vs_textbook = ratio(values["connpool"], values.get("textbook"))
        cells.append(fmt_ratio(vs_textbook))
        if has_soci:
            cells.append(fmt_ratio(ratio(values["connpool"], values.get("soci"))))
        ok = None if limit is None or vs_textbook is None else vs_textbook <= limit
        cells += [target or "", met(ok)]
        rows.append(cells)

    def rate_row(label, workload, arg, target=None, floor=None):
        values = {p: get(runs, workload, p, arg, "cycles_per_s") for p in pools}
        cells = [label, "M cycles/s, higher is better"]
        cells += [fmt(values[p] / 1e6) + cv(runs, workload, p, arg, "cycles_per_s")
                  if values[p] else "-" for p in pools]
        vs_textbook = ratio(values["connpool"], values.get("textbook"))
        cells.append(fmt_ratio(vs_textbook))
        if has_soci:
            cells.append(fmt_ratio(ratio(values["connpool"], values.get("soci"))))
        ok = None if floor is None or vs_textbook is None else vs_textbook >= floor
        cells += [target or "", met(ok)]
        rows.append(cells)

    def growth_row(label, workload):
        values = {p: ratio(get(runs, workload, p, 4096, "cpu_time"),
                           get(runs, workload, p, 1, "cpu_time")) for p in pools}
        cells = [label, "time at 4096 / time at 1"] + [fmt_ratio(values[p]) for p in pools]
        cells += ["", ""] if has_soci else [""]
        growth = values["connpool"]
        cells += ["connpool 4096 within 1.15x of 1",
                  met(None if growth is None else growth <= 1.15)]
        rows.append(cells)

    time_row("W1 cycle, 8 idle", "BM_W1_Cycle", None, "at most 1.3x textbook (stretch 1.0x)", 1.3)
    for t in (2, 4, 8):
        rate_row(f"W2 no-wait, T = {t}", "BM_W2_NoWait", t, "at least 4x textbook", 4.0)
    for n in (1, 64, 4096):
        time_row(f"W4 scale, {n} idle", "BM_W4_Scale", n)
    growth_row("W4 growth", "BM_W4_Scale")
    for n in (1, 64, 4096):
        time_row(f"W4b scale, {n} open, 1 free", "BM_W4b_ScaleHeld", n)
    growth_row("W4b growth", "BM_W4b_ScaleHeld")
    return head, rows


def table_contended(runs, pools):
    """W3: one row per pool."""
    w = "BM_W3_Contended"
    head = ["Pool", "M cycles/s", "vs textbook", "wait p50 µs", "wait p99 µs", "p99 vs textbook", "wait p99.9 µs",
            "wait max µs (median; worst rep.)", "cycles min/max", "Targets (issue 3)", "Met"]
    tb_rate = get(runs, w, "textbook", 16, "cycles_per_s")
    tb_p99 = get(runs, w, "textbook", 16, "wait_p99_us")
    rows = []
    for p in pools:
        rate = get(runs, w, p, 16, "cycles_per_s")
        if rate is None:
            continue
        p50 = get(runs, w, p, 16, "wait_p50_us")
        p99 = get(runs, w, p, 16, "wait_p99_us")
        p999 = get(runs, w, p, 16, "wait_p999_us")
        wmax = get(runs, w, p, 16, "wait_max_us")
        wmax_worst = get(runs, w, p, 16, "wait_max_us", "max")
        fair = get(runs, w, p, 16, "cycles_min_max")
        r_rate = ratio(rate, tb_rate)
        r_p99 = ratio(p99, tb_p99)
        target, ok = "", None
        if p in ("connpool_barging", "connpool_barging_2ms", "connpool_barging_10ms"):
            target = "throughput at least 1x textbook; p99 at most 0.5x textbook"
            if r_rate is not None and r_p99 is not None:
                ok = r_rate >= 1.0 and r_p99 <= 0.5
        elif p == "connpool_fifo":
            target = "cycles min/max at least 0.9; max wait at most 10 ms; throughput at least 0.4x"
            if None not in (r_rate, fair, wmax):
                ok = fair >= 0.9 and wmax <= 10_000 and r_rate >= 0.4
        rows.append([TITLE[p], fmt(rate / 1e6) + cv(runs, w, p, 16, "cycles_per_s"),
                     fmt_ratio(r_rate), fmt(p50), fmt(p99), fmt_ratio(r_p99), fmt(p999),
                     f"{fmt(wmax)}; {fmt(wmax_worst)}", fmt(fair, 2), target, met(ok)])
    return head, rows


def markdown(head, rows):
    numeric = [i for i, h in enumerate(head)
               if h not in ("Workload", "Unit", "Pool", "Target (issue 3)", "Targets (issue 3)",
                            "Met")]
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---:" if i in numeric else "---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description="workloads_bench JSON to results.md + chart data")
    ap.add_argument("json")
    ap.add_argument("out_dir")
    ap.add_argument("--machine", help="machine.txt written by run.sh, quoted in the table's notes")
    ap.add_argument("--command", help="the command that produced the JSON")
    args = ap.parse_args()

    context, runs = load(args.json)
    present = {pool for (_, pool, _) in runs}
    pools = [p for p in POOLS if p in present]
    w3_pools = [p for p in W3_POOLS if p in present]
    if "connpool" not in pools or "textbook" not in pools:
        sys.exit("report.py: the JSON has no connpool or textbook results")
    reps = next(iter(next(iter(runs.values())).values()))["repetitions"]
    os.makedirs(args.out_dir, exist_ok=True)

    lines = [f"Run of {context['date']}: medians of {reps} interleaved repetitions "
             "(± is the coefficient of variation over the repetitions)."]
    if args.command:
        lines.append(f"Command: `{args.command}`.")
    if args.machine:
        with open(args.machine) as f:
            machine = [line.rstrip("\n") for line in f if line.strip()]
        lines.append("Machine: " + "; ".join(machine) + ".")
    lines.append("")
    lines.append("**W1, W2, W4, W4b** (single-thread figures are CPU time per acquire+release; "
                 "W2 is cycles of all threads per second of wall time; a ratio is connpool's "
                 "figure divided by the other pool's, in the row's unit):")
    lines.append("")
    lines.append(markdown(*table_uncontended(runs, pools)))
    lines.append("")
    lines.append("**W3 contended** (16 threads, 4 connections, ~1 µs of work held + ~1 µs "
                 "outside; wait = time spent in acquire(); cycles min/max = fairness over the "
                 "window in which all 16 threads ran; the CPU bound is about 0.9 M cycles/s):")
    lines.append("")
    lines.append(markdown(*table_contended(runs, w3_pools)))
    lines.append("")
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines))

    # Fixed columns and colour indices (plot.gp's line types), so that a pool keeps its colour
    # in every panel and a missing pool is a gap (NaN), not a shift.
    with open(os.path.join(args.out_dir, "w2.dat"), "w") as f:
        f.write("# threads " + " ".join(TITLE[p].replace(" ", "_") for p in POOLS) + "\n")
        for t in (2, 4, 8):
            vals = [get(runs, "BM_W2_NoWait", p, t, "cycles_per_s") for p in POOLS]
            f.write(f"T={t} " + " ".join("NaN" if v is None else f"{v / 1e6:.4f}" for v in vals)
                    + "\n")
    colour = {"connpool": 1, "connpool_defaults": 2, "connpool_fifo": 1, "connpool_barging": 2,
              "connpool_barging_1ms": 2, "connpool_barging_2ms": 2, "connpool_barging_10ms": 2, "textbook": 3, "soci": 4}
    with open(os.path.join(args.out_dir, "w3.dat"), "w") as f:
        f.write("# pool cycles_per_s_M wait_p99_us colour\n")
        for p in w3_pools:
            rate = get(runs, "BM_W3_Contended", p, 16, "cycles_per_s")
            p99 = get(runs, "BM_W3_Contended", p, 16, "wait_p99_us")
            if rate is None or p99 is None:
                continue
            f.write(f"\"{TITLE[p]}\" {rate / 1e6:.4f} {p99:.4f} {colour[p]}\n")
    # The distribution of W3's waits from connpool's own histograms (wait_hist_NN counters, the
    # mean over the repetitions), as a cumulative share per bucket bound.
    hist_pools = [p for p in w3_pools
                  if get(runs, "BM_W3_Contended", p, 16, "wait_hist_00", "mean") is not None]
    with open(os.path.join(args.out_dir, "w3_waits.dat"), "w") as f:
        f.write("# bound_us " + " ".join(TITLE[p].replace(" ", "_") for p in hist_pools) + "\n")
        counts = {p: [get(runs, "BM_W3_Contended", p, 16, f"wait_hist_{i:02d}", "mean") or 0.0
                      for i in range(29)] for p in hist_pools}
        totals = {p: sum(c) or 1.0 for p, c in counts.items()}
        running = {p: 0.0 for p in hist_pools}
        for i in range(28):  # the last, unbounded bucket has no bound to plot
            for p in hist_pools:
                running[p] += counts[p][i]
            f.write(f"{2 ** i} " + " ".join(f"{running[p] / totals[p]:.6f}" for p in hist_pools)
                    + "\n")
    print(f"report: wrote results.md, w2.dat, w3.dat, w3_waits.dat into {args.out_dir}")


if __name__ == "__main__":
    main()
