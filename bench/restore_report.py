#!/usr/bin/env python3
"""Turn a bench/restore.sh run into a table, a JSON file and docs/benchmarks.md.

    restore_report.py --results results.tsv --meta meta.tsv --manifest manifest.json
                      --steps-dir DIR --json OUT.json [--doc docs/benchmarks.md]

results.tsv: one row per (round, tool) with wall seconds, peak RSS (KiB), exit
code and the check of the restored stack; meta.tsv: key<TAB>value lines;
manifest.json: the restored set's (for the sizes); DIR/roundN-c.tsv: the
phases of stack-backup's restore (restore_check.py stamp). With --doc, the
part of the document between the BEGIN/END restore markers is replaced
(appended when they are missing); the rest of the document is left alone.
Standard library only.
"""

import argparse
import csv
import json
import os
import sys

TOOLS = [("b", "(b) restic pipeline"), ("c", "(c) stack-backup")]
# Targets from the issue.
RATIO_TARGET = 0.8
PEAK_RSS_TARGET_MIB = 300

BEGIN = "<!-- BEGIN restore results: written by bench/restore.sh, do not edit by hand -->"
END = "<!-- END restore results -->"


def num(s, kind=float):
    try:
        return kind(s)
    except (TypeError, ValueError):
        return None


def load(results_path, meta_path, manifest_path, steps_dir):
    runs = []
    with open(results_path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            runs.append({
                "round": int(r["round"]),
                "position": int(r["position"]),
                "tool": r["tool"],
                "wall_s": num(r["wall_s"]),
                "max_rss_kib": num(r["max_rss_kib"], int),
                "exit_code": num(r["exit_code"], int),
                "verified": r["verified"].startswith("ok:"),
                "check": r["verified"],
                "note": r["note"] or None,
            })
    meta = {}
    with open(meta_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" in line:
                k, v = line.split("\t", 1)
                meta[k] = v
    with open(manifest_path) as f:
        manifest = json.load(f)
    steps = {}
    for r in sorted({r["round"] for r in runs}):
        p = os.path.join(steps_dir, f"round{r}-c.tsv")
        if os.path.exists(p):
            with open(p, newline="") as f:
                steps[r] = [
                    {"phase": s["phase"], "start_s": float(s["start_s"]), "end_s": float(s["end_s"]),
                     "seconds": round(float(s["end_s"]) - float(s["start_s"]), 3), "state": s["state"]}
                    for s in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                ]
    samples = {}
    for r in runs:
        p = os.path.join(steps_dir, f"round{r['round']}-{r['tool']}.sample.tsv")
        if os.path.exists(p):
            with open(p, newline="") as f:
                samples[(r["round"], r["tool"])] = [
                    {"label": x["label"], "first_s": float(x["first_s"]), "last_s": float(x["last_s"]),
                     "seen_s": float(x["seen_s"]), "peak_rss_kib": num(x.get("peak_rss_kib"), int)}
                    for x in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                ]
        p = os.path.join(steps_dir, f"round{r['round']}-{r['tool']}.memory.tsv")
        if os.path.exists(p) and r["tool"] == "c" and r["round"] in steps:
            with open(p, newline="") as f:
                mem = [(float(x["t_s"]), int(x["rss_kib"]), int(x["hwm_kib"]))
                       for x in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
            # The largest RSS of stack-backup itself sampled during each phase.
            for ph in steps[r["round"]]:
                inside = [m[1] for m in mem if ph["start_s"] <= m[0] <= ph["end_s"]]
                ph["max_rss_sampled_kib"] = max(inside) if inside else None
    return runs, meta, manifest, steps, samples


def ok(run):
    return run is not None and run["exit_code"] == 0 and run["wall_s"] is not None and run["verified"]


def analyse(runs):
    by = {(r["round"], r["tool"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})
    ratios = {}
    for rd in rounds:
        b, c = by.get((rd, "b")), by.get((rd, "c"))
        e = {"first": next((r["tool"] for r in runs if r["round"] == rd and r["position"] == 1), None),
             "c_over_b": None, "target": RATIO_TARGET, "met": None}
        if ok(b) and ok(c) and b["wall_s"] > 0:
            e["c_over_b"] = round(c["wall_s"] / b["wall_s"], 3)
            e["met"] = e["c_over_b"] <= RATIO_TARGET
        elif b is not None and c is not None and not ok(c):
            e["met"] = False  # a failed restore misses the target
        ratios[rd] = e
    c_rss = [r["max_rss_kib"] for r in runs if r["tool"] == "c" and r["max_rss_kib"] is not None
             and r["exit_code"] == 0]
    peak = {"target_mib": PEAK_RSS_TARGET_MIB,
            "c_peak_mib": round(max(c_rss) / 1024, 1) if c_rss else None}
    peak["met"] = None if peak["c_peak_mib"] is None else peak["c_peak_mib"] <= PEAK_RSS_TARGET_MIB
    return by, rounds, ratios, peak


def mib(n):
    return "–" if n is None else f"{n / 1048576:,.1f} MiB"


def cell_time(r):
    if r is None or r["exit_code"] is None:
        return "n/a"
    if r["exit_code"] != 0:
        return f"failed (exit {r['exit_code']}, {r['wall_s']} s)"
    if not r["verified"]:
        return f"{r['wall_s']:.1f} s, **wrong result**"
    return f"{r['wall_s']:.1f} s"


def cell_rss(r):
    if r is None or r["max_rss_kib"] is None:
        return "n/a"
    return f"{r['max_rss_kib'] / 1024:,.0f} MiB"


def verdict(met):
    return "–" if met is None else ("met" if met else "**missed**")


def overall(ratios):
    vals = [e["met"] for e in ratios.values()]
    if not vals or any(v is None for v in vals):
        return None
    return all(vals)


def sizes(manifest):
    comps = manifest.get("components", {})
    arts = manifest.get("artifacts", [])
    pg = next((c for c in comps.values() if c.get("kind") == "postgres"), {})
    dump = sum(a["size"] for a in arts if a.get("path") == pg.get("dump"))
    images = [a for a in arts if a.get("component", "").startswith("docker.image.")]
    path = next((c for c in comps.values() if c.get("kind") == "path"), {})
    return {
        "db": pg.get("database"),
        "tables": len(pg.get("row_counts", {})),
        "rows": sum(pg.get("row_counts", {}).values()),
        "dump_bytes": dump,
        # Images saved together share one archive (decision 0045): count
        # the images and the archives apart.
        "images": sum(1 for k in comps if k.startswith("docker.image.")),
        "image_archives": len(images),
        "image_archive_bytes": sum(a["size"] for a in images),
        "files": path.get("files"),
        "files_bytes": path.get("bytes"),
    }


def phase_table(steps, rounds):
    """Rows of (phase, [seconds per round]) in the order of the first round that has them."""
    names = []
    for rd in rounds:
        for s in steps.get(rd, []):
            if s["phase"] not in names:
                names.append(s["phase"])
    rows = []
    for n in names:
        cells = []
        for rd in rounds:
            s = next((x for x in steps.get(rd, []) if x["phase"] == n), None)
            if s is None:
                cells.append(None)
            else:
                cells.append((s["seconds"], s["state"], s.get("max_rss_sampled_kib")))
        rows.append((n, cells))
    return rows


def sample_table(samples, rounds):
    """Rows of (label, [(first, seen) or None per column]) and the columns (tool, round)."""
    cols = [(t, rd) for t, _ in TOOLS for rd in rounds if (rd, t) in samples]
    labels = []
    for t, rd in cols:
        for x in samples[(rd, t)]:
            if x["label"] not in labels:
                labels.append(x["label"])
    rows = []
    for lab in labels:
        cells = []
        for t, rd in cols:
            x = next((y for y in samples[(rd, t)] if y["label"] == lab), None)
            cells.append(None if x is None else (x["first_s"], x["seen_s"], x.get("peak_rss_kib")))
        rows.append((lab, cells))
    return cols, rows


def markdown(runs, meta, manifest, steps, samples, by, rounds, ratios, peak):
    m = meta.get
    sz = sizes(manifest)
    out = []
    mem = num(m("mem_total_kib"), int)
    made = ("generated by `bench/backup.sh` at the start of this run"
            if m("stack_generated") == "1" else f"left by the `bench/backup.sh` run of {m('stack_made', '?')}")
    out.append(f"Run of {m('date', '?')} at commit `{m('git_commit', '?')}` (scale {m('scale', '?')}, "
               f"{len(rounds)} rounds, {int(num(m('total_seconds'), int) or 0)} s for the rounds). "
               f"The stack and set `{m('set_name', '?')}` were {made}.")
    out.append("")
    out.append(f"- Machine: {m('cpu', '?')}, {m('nproc', '?')} CPUs, "
               f"{(mem / 1048576) if mem else 0:.1f} GiB RAM, {m('os', '?')}, kernel {m('kernel', '?')}")
    out.append(f"- Tools: restic {m('restic_version', '?')}, pg_restore {m('pg_restore_version', '?')} "
               f"(server {m('pg_server_version', '?')}), Docker Engine {m('docker_server_version', '?')}")
    out.append(f"- stack-backup: `{m('sb_bin', '?')}` {m('sb_version', '?')} ({m('sb_profile', '?')} build, "
               f"built {m('sb_bin_built', '?')}); the set was written by {m('set_tool', '?')}")
    out.append(f"- Load average (1, 5, 15 min): {m('loadavg_start', '?')} at the start, "
               f"{m('loadavg_end', '?')} at the end")
    out.append("")
    out.append(f"**Data restored** (set `{m('set_name', '?')}`)")
    out.append("")
    out.append("| component | size |")
    out.append("| --- | --- |")
    out.append(f"| PostgreSQL `{sz['db']}`, pgbench scale {m('pg_scale', '?')} | {sz['rows']:,} rows in "
               f"{sz['tables']} tables; {mib(sz['dump_bytes'])} as `pg_dump -Fc -Z0` |")
    out.append(f"| {sz['images']} Docker images sharing a {m('layer_mib', '?')} MiB layer | "
               f"{mib(sz['image_archive_bytes'])} as {sz['image_archives']} `docker save` archive(s) |")
    out.append(f"| directory | {sz['files'] or 0:,} files, {mib(sz['files_bytes'])} |")
    out.append(f"| repositories read | (b) restic: {mib(num(m('restic_repo_bytes'), int))}; "
               f"(c) stack-backup: {mib(num(m('sb_repo_bytes_start'), int))} "
               f"({mib(num(m('sb_repo_bytes_end'), int))} after this run's pre-restore sets) |")
    broken = next((r["note"].split("broken before: ", 1)[1] for r in runs
                   if r["note"] and "broken before: " in r["note"]), "?")
    out.append("")
    out.append(f"Broken before each restore: {broken}.")
    out.append("")
    out.append("**Wall time and peak memory** (c/b: stack-backup's time as a fraction of the restic "
               "pipeline's; peak memory is the largest process: restic, pg_restore, the docker CLI, "
               "stack-backup)")
    out.append("")
    out.append("| round | ran first | (b) restic pipeline | (c) stack-backup | c/b | target | met? "
               "| (b) peak RSS | (c) peak RSS |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for rd in rounds:
        e = ratios[rd]
        b, c = by.get((rd, "b")), by.get((rd, "c"))
        cb = "n/a" if e["c_over_b"] is None else f"{e['c_over_b']:.2f}"
        out.append(f"| {rd} | ({e['first']}) | {cell_time(b)} | {cell_time(c)} | {cb} | ≤ {RATIO_TARGET:.2f} | "
                   f"{verdict(e['met'])} | {cell_rss(b)} | {cell_rss(c)} |")
    out.append("")
    pk = "n/a" if peak["c_peak_mib"] is None else f"{peak['c_peak_mib']:,.0f} MiB"
    out.append(f"Wall time of (c) against (b): {verdict(overall(ratios))} in "
               + ("every round" if overall(ratios) is not None else "not every round")
               + f" (target ≤ {RATIO_TARGET:.2f}). Peak RSS of (c): {pk}, target ≤ "
               f"{PEAK_RSS_TARGET_MIB} MiB: {verdict(peak['met'])}.")
    checks = [f"({r['tool']}) round {r['round']}: {r['check']}" for r in runs]
    if all(r["verified"] for r in runs):
        out.append(f"Every restore brought back exactly the set (every table's rows, the image IDs, "
                   f"every file's SHA-256).")
    else:
        out.append("Restored stack checks: " + "; ".join(checks) + ".")
    notes = sorted({r["note"].split("; broken before:")[0] for r in runs
                    if r["note"] and r["note"].split("; broken before:")[0]
                    and not r["note"].startswith("broken before:")})
    extra = [n for n in notes if "left behind" in n]
    if extra:
        out.append(f"Left behind after a restore (removed before the next one): {'; '.join(extra)}.")
    rows = phase_table(steps, rounds)
    if rows:
        out.append("")
        out.append("**Where (c)'s time and memory go** (its step lines, timed as they arrive; "
                   "stack-backup's own RSS sampled 5 times a second, the largest sample in each phase)")
        out.append("")
        out.append("| phase | " + " | ".join(f"round {rd} | RSS" for rd in rounds) + " |")
        out.append("| --- | " + " | ".join("---: | ---:" for _ in rounds) + " |")
        for name, cells in rows:
            txt = []
            for c in cells:
                if c is None:
                    txt += ["–", "–"]
                    continue
                if c[1] == "skipped":
                    txt.append("skipped")
                elif c[1] in ("ok",):
                    txt.append(f"{c[0]:.1f} s")
                else:
                    txt.append(f"{c[0]:.1f} s ({c[1]})")
                txt.append("–" if c[2] is None else f"{c[2] / 1024:,.0f} MiB")
            out.append(f"| {name} | " + " | ".join(txt) + " |")
    cols, srows = sample_table(samples, rounds)
    if srows:
        out.append("")
        out.append("**What runs when** (processes under each restore and its staging directories, "
                   "sampled 5 times a second: seconds seen, from when, largest RSS sampled)")
        out.append("")
        out.append("| | " + " | ".join(f"({t}) round {rd}" for t, rd in cols) + " |")
        out.append("| --- | " + " | ".join("---:" for _ in cols) + " |")

        def cell(c):
            if c is None:
                return "–"
            txt = f"{c[1]:.1f} s from {c[0]:.1f} s"
            return txt + (f", {c[2] / 1024:,.0f} MiB" if c[2] else "")
        for lab, cells in srows:
            out.append(f"| {lab} | " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def text_table(runs, by, rounds, ratios, peak, steps, samples):
    rows = [["round", "first", "(b) restic", "(c) stack-backup", "c/b", "target", "", "(b) RSS", "(c) RSS"]]
    for rd in rounds:
        e = ratios[rd]
        b, c = by.get((rd, "b")), by.get((rd, "c"))
        rows.append([str(rd), f"({e['first']})", cell_time(b).replace("**", ""),
                     cell_time(c).replace("**", ""),
                     "n/a" if e["c_over_b"] is None else f"{e['c_over_b']:.2f}",
                     f"<= {RATIO_TARGET:.2f}", {None: "", True: "met", False: "MISSED"}[e["met"]],
                     cell_rss(b), cell_rss(c)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    pk = "n/a" if peak["c_peak_mib"] is None else f"{peak['c_peak_mib']:.0f} MiB"
    lines.append(f"peak RSS of (c): {pk} (target <= {PEAK_RSS_TARGET_MIB} MiB"
                 + ("" if peak["met"] is None else (", met" if peak["met"] else ", MISSED")) + ")")
    for r in runs:
        lines.append(f"check ({r['tool']}) round {r['round']}: {r['check']}")
    for name, cells in phase_table(steps, rounds):
        lines.append(f"  (c) {name}: " + ", ".join(
            "-" if c is None else ("skipped" if c[1] == "skipped" else f"{c[0]:.1f}s")
            + ("" if c is None or c[2] is None else f" ({c[2] / 1024:.0f} MiB)") for c in cells))
    cols, srows = sample_table(samples, rounds)
    for lab, cells in srows:
        lines.append(f"  {lab}: " + ", ".join(
            f"({t}{rd}) " + ("-" if c is None else f"{c[1]:.1f}s@{c[0]:.1f}"
                             + (f" {c[2] / 1024:.0f}MiB" if c[2] else ""))
            for (t, rd), c in zip(cols, cells)))
    return "\n".join(lines) + "\n"


def write_doc(path, body):
    section = f"{BEGIN}\n\n{body}\n{END}\n"
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = "# Benchmarks\n\n## Restore benchmark\n\n"
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
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--steps-dir", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--doc")
    args = ap.parse_args()

    runs, meta, manifest, steps, samples = load(args.results, args.meta, args.manifest, args.steps_dir)
    by, rounds, ratios, peak = analyse(runs)
    result = {
        "schema": 1,
        "meta": meta,
        "data": sizes(manifest),
        "runs": runs,
        "ratios": {str(k): v for k, v in ratios.items()},
        "ratio_met_every_round": overall(ratios),
        "peak_rss": peak,
        "c_phases": {str(k): v for k, v in steps.items()},
        "sampled": {f"{t}{rd}": v for (rd, t), v in samples.items()},
        "c_counts_against_targets": meta.get("sb_profile") != "debug",
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    sys.stdout.write(text_table(runs, by, rounds, ratios, peak, steps, samples))
    if args.doc:
        write_doc(args.doc, markdown(runs, meta, manifest, steps, samples, by, rounds, ratios, peak))


if __name__ == "__main__":
    main()
