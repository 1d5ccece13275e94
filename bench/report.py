#!/usr/bin/env python3
"""Turn a bench/backup.sh run into a table, a JSON file and docs/benchmarks.md.

    report.py --results results.tsv --meta meta.tsv --json OUT.json [--doc docs/benchmarks.md]

results.tsv: one row per (scenario, tool) with wall seconds, peak RSS (KiB),
exit code and sizes; meta.tsv: key<TAB>value lines. With --doc, the part of
the document between the BEGIN/END results markers is replaced (appended
when the markers are missing); the rest of the document is left alone.
Standard library only.
"""

import argparse
import csv
import json
import sys

SCENARIOS = [
    ("first", "first backup"),
    ("unchanged", "unchanged second backup"),
    ("changed", "after a day of change"),
]
TOOLS = [
    ("a", "(a) plain script"),
    ("b", "(b) restic pipeline"),
    ("c", "(c) stack-backup"),
]
# Targets from the issue: stack-backup's wall time as a fraction of (b).
TARGETS = {"first": 0.8, "unchanged": 0.25, "changed": 0.5}
PEAK_RSS_TARGET_MIB = 300

BEGIN = "<!-- BEGIN bench results: written by bench/backup.sh, do not edit by hand -->"
END = "<!-- END bench results -->"


def num(s, kind=float):
    try:
        return kind(s)
    except (TypeError, ValueError):
        return None


def load(results_path, meta_path):
    runs = []
    with open(results_path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            runs.append(
                {
                    "scenario": r["scenario"],
                    "tool": r["tool"],
                    "run": r["run"],
                    "wall_s": num(r["wall_s"]),
                    "max_rss_kib": num(r["max_rss_kib"], int),
                    "exit_code": num(r["exit_code"], int),
                    "size_run_bytes": num(r["size_run_bytes"], int),
                    "size_total_bytes": num(r["size_total_bytes"], int),
                    "note": r["note"] or None,
                }
            )
    meta = {}
    with open(meta_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" in line:
                k, v = line.split("\t", 1)
                meta[k] = v
    return runs, meta


def ok(run):
    return run is not None and run["exit_code"] == 0 and run["wall_s"] is not None


def analyse(runs, meta):
    by = {(r["scenario"], r["tool"]): r for r in runs}
    ratios = {}
    for scen, _ in SCENARIOS:
        b, c, a = by.get((scen, "b")), by.get((scen, "c")), by.get((scen, "a"))
        entry = {"target_c_over_b": TARGETS[scen], "c_over_b": None, "met": None,
                 "a_over_b": None}
        if ok(b) and b["wall_s"] > 0:
            if ok(c):
                entry["c_over_b"] = round(c["wall_s"] / b["wall_s"], 3)
                entry["met"] = entry["c_over_b"] <= TARGETS[scen]
            if ok(a):
                entry["a_over_b"] = round(a["wall_s"] / b["wall_s"], 3)
        ratios[scen] = entry
    c_rss = [r["max_rss_kib"] for r in runs if r["tool"] == "c" and ok(r)]
    peak = {
        "target_mib": PEAK_RSS_TARGET_MIB,
        "c_peak_mib": round(max(c_rss) / 1024, 1) if c_rss else None,
    }
    peak["met"] = None if peak["c_peak_mib"] is None else peak["c_peak_mib"] <= PEAK_RSS_TARGET_MIB
    return by, ratios, peak


def mib(n):
    return "–" if n is None else f"{n / 1048576:,.1f} MiB"


def cell_time(r):
    if r is None or r["exit_code"] is None:
        return "n/a"
    if r["exit_code"] != 0:
        return f"failed (exit {r['exit_code']}, {r['wall_s']} s)"
    return f"{r['wall_s']:.1f} s"


def cell_rss(r):
    if not ok(r) or r["max_rss_kib"] is None:
        return "n/a"
    return f"{r['max_rss_kib'] / 1024:,.0f} MiB"


def verdict(met):
    return "–" if met is None else ("met" if met else "**missed**")


def markdown(runs, meta, by, ratios, peak):
    m = meta.get
    out = []
    mem_gib = num(m("mem_total_kib"), int)
    mem = f"{mem_gib / 1048576:.1f} GiB" if mem_gib else "?"
    out.append(f"Run of {m('date', '?')} at commit `{m('git_commit', '?')}`"
               f" (scale {m('scale', '?')}, {int(num(m('total_seconds'), int) or 0)} s in all).")
    out.append("")
    out.append(f"- Machine: {m('cpu', '?')}, {m('nproc', '?')} CPUs, {mem} RAM, "
               f"{m('os', '?')}, kernel {m('kernel', '?')}")
    out.append(f"- Tools: restic {m('restic_version', '?')}, pg_dump {m('pg_dump_version', '?')} "
               f"(server {m('pg_server_version', '?')}), Docker Engine {m('docker_server_version', '?')}, "
               f"gzip {m('gzip_version', '?')}")
    sbline = f"- stack-backup: `{m('sb_bin', '?')}`"
    if m("sb_version"):
        sbline += f" {m('sb_version')} ({m('sb_profile', '?')} build)"
    if m("sb_status") != "available":
        sbline += f" — {m('sb_status', 'not available')}"
    elif m("sb_profile") == "debug":
        sbline += " — **a debug build: (c)'s times and ratios do not count against the targets**"
    out.append(sbline)
    out.append(f"- Load average (1, 5, 15 min): {m('loadavg_start', '?')} at the start, "
               f"{m('loadavg_end', '?')} at the end")
    out.append("")
    out.append("**Data**")
    out.append("")
    out.append("| component | size |")
    out.append("| --- | --- |")
    db = num(m("db_bytes"), int)
    out.append(f"| PostgreSQL `sbbench`, pgbench scale {m('pg_scale', '?')} | {mib(db)} on disk, "
               f"{mib(num(m('first.dump_bytes'), int))} as `pg_dump -Fc -Z0` |")
    out.append(f"| 3 Docker images sharing a {m('layer_mib', '?')} MiB layer, "
               f"{m('small_layer_mib', '?')} MiB own layer each | "
               f"{mib(num(m('images_unique_bytes'), int))} unique, "
               f"{mib(num(m('first.docker_save_bytes'), int))} as 3 × `docker save` |")
    out.append(f"| directory, {num(m('files_count'), int) or 0:,} files | "
               f"{mib(num(m('files_bytes'), int))} ({mib(num(m('first.tar_bytes'), int))} as tar) |")
    out.append(f"| day of change | {num(m('change.pgbench_transactions'), int) or 0:,} pgbench "
               f"transactions, `{m('change.image_rebuilt', '?')}` rebuilt with a new top layer, "
               f"{num(m('change.files_changed'), int) or 0:,} files changed "
               f"({mib(num(m('change.files_bytes_written'), int))} written) |")
    out.append("")
    out.append("**Wall time** (c/b: stack-backup's time as a fraction of the restic pipeline's)")
    out.append("")
    out.append("| scenario | " + " | ".join(t for _, t in TOOLS) + " | c/b | target | met? | a/b |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for scen, label in SCENARIOS:
        r = ratios[scen]
        cells = [cell_time(by.get((scen, t))) for t, _ in TOOLS]
        cb = "n/a" if r["c_over_b"] is None else f"{r['c_over_b']:.2f}"
        ab = "n/a" if r["a_over_b"] is None else f"{r['a_over_b']:.2f}"
        out.append(f"| {label} | " + " | ".join(cells)
                   + f" | {cb} | ≤ {r['target_c_over_b']:.2f} | {verdict(r['met'])} | {ab} |")
    out.append("")
    out.append("**Peak memory** (max RSS; for (a) and (b) the largest process of the pipeline, "
               "for (c) stack-backup or a tool it ran, whichever is larger)")
    out.append("")
    out.append("| scenario | " + " | ".join(t for _, t in TOOLS) + " |")
    out.append("| --- | ---: | ---: | ---: |")
    for scen, label in SCENARIOS:
        out.append(f"| {label} | " + " | ".join(cell_rss(by.get((scen, t))) for t, _ in TOOLS) + " |")
    pk = "n/a" if peak["c_peak_mib"] is None else f"{peak['c_peak_mib']:,.0f} MiB"
    out.append("")
    out.append(f"Peak RSS of (c): {pk}, target ≤ {PEAK_RSS_TARGET_MIB} MiB: {verdict(peak['met'])}.")
    out.append("")
    out.append("**Storage used after each run** ((a) keeps one full gzip copy per run; "
               "(b) and (c) are one deduplicating repository each)")
    out.append("")
    out.append("| after | (a) this run | (a) all runs | (b) restic repository | (c) stack-backup repository |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for scen, label in SCENARIOS:
        a, b, c = (by.get((scen, t)) for t, _ in TOOLS)
        out.append(f"| {label} | {mib(a and a['size_run_bytes'])} | {mib(a and a['size_total_bytes'])} | "
                   f"{mib(b and b['size_total_bytes'])} | {mib(c and c['size_total_bytes'])} |")
    return "\n".join(out) + "\n"


def text_table(by, ratios, peak):
    rows = [["scenario", "(a) plain", "(b) restic", "(c) stack-backup", "c/b", "target", ""]]
    for scen, label in SCENARIOS:
        r = ratios[scen]
        rows.append([label] + [cell_time(by.get((scen, t))) for t, _ in TOOLS]
                    + ["n/a" if r["c_over_b"] is None else f"{r['c_over_b']:.2f}",
                       f"<= {r['target_c_over_b']:.2f}",
                       {None: "", True: "met", False: "MISSED"}[r["met"]]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    pk = "n/a" if peak["c_peak_mib"] is None else f"{peak['c_peak_mib']:.0f} MiB"
    lines.append(f"peak RSS of (c): {pk} (target <= {PEAK_RSS_TARGET_MIB} MiB"
                 + ("" if peak["met"] is None else (", met" if peak["met"] else ", MISSED")) + ")")
    return "\n".join(lines) + "\n"


def write_doc(path, body):
    section = f"{BEGIN}\n\n{body}\n{END}\n"
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = "# Benchmarks\n\n## Results\n\n"
    if BEGIN in doc and END in doc and doc.index(BEGIN) < doc.index(END):
        head = doc[: doc.index(BEGIN)]
        tail = doc[doc.index(END) + len(END):].lstrip("\n")
        doc = head + section + ("\n" + tail if tail else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--doc")
    args = ap.parse_args()

    runs, meta = load(args.results, args.meta)
    by, ratios, peak = analyse(runs, meta)
    result = {
        "schema": 1,
        "meta": meta,
        "runs": runs,
        "ratios": ratios,
        "peak_rss": peak,
        "stack_backup_status": meta.get("sb_status"),
        # A debug build's figures say nothing about the targets.
        "c_counts_against_targets": meta.get("sb_status") == "available"
        and meta.get("sb_profile") != "debug",
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    sys.stdout.write(text_table(by, ratios, peak))
    if meta.get("sb_status") == "available" and meta.get("sb_profile") == "debug":
        sys.stdout.write("(c) is a debug build: its times do not count against the targets\n")
    if args.doc:
        write_doc(args.doc, markdown(runs, meta, by, ratios, peak))


if __name__ == "__main__":
    main()
