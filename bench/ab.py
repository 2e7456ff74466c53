#!/usr/bin/env python3
# connpool - compares two builds of the benchmarks, interleaved, on one machine.
# SPDX-License-Identifier: MIT
#
# Runs cycle_bench and workloads_bench (connpool's W1, W2 and W3) of build A and build B in
# alternating rounds (A B, B A, A B, ...), so that a drift of the machine (another process, the
# CPU's clock) hits both alike, and prints the median of every benchmark's per-round medians
# with the ratio B / A. Throughput figures (items per second) are compared where a benchmark
# reports them, times otherwise.
#
# Usage: bench/ab.py --a BUILD_A --b BUILD_B [--label-a TEXT] [--label-b TEXT] [--rounds N]
#                    [--repetitions R] [--min-time S] [--w3-min-time S] [--json OUT]
#   BUILD_A, BUILD_B  build trees (e.g. build/release of two commits)
#   --rounds N        alternating rounds (default 4: A B B A A B B A)
#   --repetitions R   Google Benchmark repetitions per run (default 3; their median is the round's)
#   --w3-only         only W3 (the contended workload); --only REGEX: only the matching rows
import argparse
import json
import re
import statistics
import subprocess
import sys

WORKLOADS_FILTER = r"BM_W[12]_[A-Za-z]+/connpool"


def run(binary, extra, min_time, repetitions):
    cmd = [
        binary,
        "--benchmark_format=json",
        f"--benchmark_repetitions={repetitions}",
        "--benchmark_report_aggregates_only=true",
        f"--benchmark_min_time={min_time}",
    ] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    results = {}
    for b in json.loads(out)["benchmarks"]:
        if repetitions > 1 and b.get("aggregate_name") != "median":
            continue
        name = b["run_name"]
        if "cycles_per_s" in b:
            results[name] = ("cycles/s", b["cycles_per_s"])
        elif "items_per_second" in b:
            results[name] = ("items/s", b["items_per_second"])
        else:
            results[name] = (b["time_unit"], b["real_time"])
        for key in ("wait_p99_us", "wait_max_us"):
            if key in b:
                results[name + " " + key] = ("us", b[key])
    return results


def one_round(build, args):
    res = {}
    if not args.w3_only:
        res.update(run(f"{build}/bench/cycle_bench", [], args.min_time, args.repetitions))
        res.update(run(f"{build}/bench/workloads_bench",
                       [f"--benchmark_filter={WORKLOADS_FILTER}"], args.min_time,
                       args.repetitions))
    res.update(run(f"{build}/bench/workloads_bench", ["--benchmark_filter=BM_W3_Contended/connpool"],
                   args.w3_min_time, args.repetitions))
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--label-a", default="A")
    p.add_argument("--label-b", default="B")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--w3-min-time", type=float, default=1.0)
    p.add_argument("--json")
    p.add_argument("--w3-only", action="store_true", help="run W3 only")
    p.add_argument("--only", help="only the rows whose name matches this regular expression")
    args = p.parse_args()

    samples = {"a": {}, "b": {}}
    units = {}
    for r in range(args.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        for side in order:
            build = args.a if side == "a" else args.b
            print(f"round {r + 1}/{args.rounds}: {side.upper()} ({build})", file=sys.stderr)
            for name, (unit, value) in one_round(build, args).items():
                samples[side].setdefault(name, []).append(value)
                units[name] = unit

    rows = []
    print(f"| Benchmark | unit | {args.label_a} | {args.label_b} | {args.label_b} / {args.label_a} |")
    print("|---|---|---:|---:|---:|")
    for name in sorted(set(samples["a"]) & set(samples["b"])):
        if args.only and not re.search(args.only, name):
            continue
        a = statistics.median(samples["a"][name])
        b = statistics.median(samples["b"][name])
        ratio = b / a if a else float("nan")
        rows.append({"name": name, "unit": units[name], "a": a, "b": b, "ratio": ratio,
                     "a_samples": samples["a"][name], "b_samples": samples["b"][name]})
        print(f"| {name} | {units[name]} | {a:,.4g} | {b:,.4g} | {ratio:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"a": args.label_a, "b": args.label_b, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
