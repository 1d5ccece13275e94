#!/usr/bin/env python3
"""Helpers of bench/scale.sh: peak RSS of every process of a command, the
live stack's state before and after a restore, and the report.

    scale.py run --out OUT.json -- CMD...
    scale.py state --pg-url URL --files-dir D --out STATE.json IMAGE...
    scale.py same --ref STATE.json --pg-url URL --files-dir D IMAGE...
    scale.py report --results R.tsv --meta M.tsv --json OUT.json [--baseline B.json]

`run` runs CMD under `/usr/bin/time -f '%e %M'` (wall seconds, and the peak
RSS of the largest process of the tree, as the other benches measure) and
meanwhile, ten times a second, reads the peak RSS (VmHWM) of every process
under it. OUT.json: wall_s, tree_peak_kib, exit code and, per label
(`stack-backup`, `pg_dump`, `docker save`, `restic backup`, ...), the
largest peak and how many such processes ran. A process that lives less
than a tenth of a second may be missed; its peak is then in tree_peak_kib
only when it is the largest. Exits with CMD's exit code.

`state` writes what a restore must bring back (row count and content hash of
every table, image IDs, every file's SHA-256 and mode); `same` compares the
live stack with it and exits 1 when the contents differ (the functions are
restore_check.py's).

`report` takes the medians of the rounds, per scenario, of (b) the restic
pipeline and (c) stack-backup, the median of the per-round ratios c/b,
seconds per GB of data (the data: the pg_dump -Z0 stream, the images'
unique bytes and the tar of the directory, as measured at the start of the
round), and the largest peak RSS of every process. With --baseline (a JSON
of an earlier run, e.g. at factor 0.1 = the bench stack's size), the ratio
of seconds per GB to that run's. Prints Markdown.

The database password comes from PGPASSWORD. Standard library only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from restore_check import db_state, descendants, files_state, image_ids  # noqa: E402

SKIP = {"time", "bash", "sh", "env", "xargs", "cat", "wc", "sleep"}


def norm(prog):
    """stack-backup under whatever name SB_BIN has (SB_BIN_NAME)."""
    return "stack-backup" if prog == os.environ.get("SB_BIN_NAME") else prog


def label(argv):
    if not argv:
        return None
    prog = norm(os.path.basename(argv[0]))
    if prog in SKIP:
        return None
    if prog in ("docker", "restic"):
        sub = next((a for a in argv[1:] if not a.startswith("-") and "=" not in a), "")
        return f"{prog} {sub}".strip()
    return prog


def hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run(args):
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    tf = args.out + ".time"
    p = subprocess.Popen(["/usr/bin/time", "-f", "%e %M", "-o", tf, *cmd])
    peaks = {}  # pid -> (label, peak)
    while p.poll() is None:
        for pid, argv, _ in descendants(p.pid):
            lab = label(argv)
            if lab:
                old = peaks.get(pid, (lab, 0))[1]
                peaks[pid] = (lab, max(old, hwm_kib(pid)))
        time.sleep(args.interval)
    with open(tf) as f:
        wall, tree = f.read().strip().splitlines()[-1].split()
    procs = {}
    for lab, peak in peaks.values():
        n, top = procs.get(lab, (0, 0))
        procs[lab] = (n + 1, max(top, peak))
    out = {"wall_s": float(wall), "tree_peak_kib": int(tree), "exit": p.returncode,
           "procs": {k: {"count": n, "peak_kib": top} for k, (n, top) in sorted(procs.items())}}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return p.returncode


def live(args):
    return {"db": db_state(args.pg_url), "images": image_ids(args.images),
            "files": {k: v[:2] for k, v in files_state(args.files_dir).items()}}


def state(args):
    with open(args.out, "w") as f:
        json.dump(live(args), f)
    return 0


def same(args):
    with open(args.ref) as f:
        ref = json.load(f)
    now = live(args)
    bad = []
    for what in ("db", "images", "files"):
        a, b = ref[what], now[what]
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            bad.append(f"{what}: {len(diff)} differ (e.g. {diff[0]})")
    rows = sum(v[0] for v in now["db"].values())
    if bad:
        print("; ".join(bad))
        return 1
    print(f"same as before: {len(now['db'])} tables, {rows} rows, {len(now['images'])} images, "
          f"{len(now['files'])} files")
    return 0


# --- report ------------------------------------------------------------------

SCENARIOS = ["first", "unchanged", "changed", "restore", "verify", "drill"]


def load(results, meta):
    rows = []
    with open(results) as f:
        head = f.readline().rstrip("\n").split("\t")
        for line in f:
            r = dict(zip(head, line.rstrip("\n").split("\t")))
            with open(r["run_json"]) as j:
                r.update(json.load(j))
            r["procs"] = {norm(k): v for k, v in r["procs"].items()}
            rows.append(r)
    m = {}
    with open(meta) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            m[k] = v
    return rows, m


def report(args):
    rows, meta = load(args.results, args.meta)
    by = {}
    for r in rows:
        by.setdefault((r["scenario"], r["tool"]), []).append(r)
    out = {"meta": meta, "scenarios": {}}
    lines = [
        "| scenario | restic pipeline (b) | stack-backup (c) | c/b (median of rounds) "
        "| c s/GB | b s/GB | c peak RSS, every process | b peak RSS, largest |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    all_peaks = {}
    for scen in SCENARIOS:
        b, c = by.get((scen, "b"), []), by.get((scen, "c"), [])
        if not c:
            continue
        ok_c = [r for r in c if r["exit"] == 0]
        ok_b = [r for r in b if r["exit"] == 0]
        med = lambda rs: statistics.median(r["wall_s"] for r in rs) if rs else None  # noqa: E731
        spg = lambda rs: statistics.median(r["wall_s"] / (int(r["data_bytes"]) / 1e9) for r in rs) if rs else None  # noqa: E731
        ratios = []
        for r in ok_c:
            mate = [x for x in ok_b if x["round"] == r["round"]]
            if mate:
                ratios.append(r["wall_s"] / mate[0]["wall_s"])
        peaks = {}
        for r in c:
            for lab, p in r["procs"].items():
                peaks[lab] = max(peaks.get(lab, 0), p["peak_kib"])
            peaks["(tree)"] = max(peaks.get("(tree)", 0), r["tree_peak_kib"])
        # The tree's peak (GNU time's %M of the command) counts too: the
        # 0.1 s sampling misses short-lived processes and a last peak.
        for lab, p in peaks.items():
            all_peaks[lab] = max(all_peaks.get(lab, 0), p)
        b_peak = max((r["tree_peak_kib"] for r in b), default=0)
        s = {"b_median_s": med(ok_b), "c_median_s": med(ok_c),
             "ratio_median": statistics.median(ratios) if ratios else None,
             "c_s_per_gb": spg(ok_c), "b_s_per_gb": spg(ok_b),
             "c_peak_kib": peaks, "b_tree_peak_kib": b_peak,
             "rounds": len(c), "failed": len(c) - len(ok_c) + len(b) - len(ok_b)}
        out["scenarios"][scen] = s
        f = lambda v, fmt: (fmt % v) if v is not None else "–"  # noqa: E731
        peak_txt = ", ".join(f"{lab} {p // 1024}" for lab, p in
                             sorted(peaks.items(), key=lambda kv: -kv[1]) if lab != "(tree)")
        note = {"drill": " (b: restic restore)",
                "verify": " (b: check of all 3 sets, c: 1 set; not comparable)"}.get(scen, "")
        lines.append(
            f"| {scen}{note} | {f(s['b_median_s'], '%.1f s')} | {f(s['c_median_s'], '%.1f s')} "
            f"| {f(s['ratio_median'], '%.2f')} | {f(s['c_s_per_gb'], '%.1f')} | {f(s['b_s_per_gb'], '%.1f')} "
            f"| {peak_txt} MiB | {b_peak // 1024} MiB |"
        )
        if s["failed"]:
            lines[-1] += f" **{s['failed']} run(s) failed**"
    worst = max(all_peaks.items(), key=lambda kv: kv[1]) if all_peaks else ("-", 0)
    out["worst_peak"] = {"label": worst[0], "kib": worst[1]}
    lines.append("")
    lines.append(f"Largest peak RSS of any process under stack-backup (or of the command's tree): {worst[0]} "
                 f"{worst[1] // 1024} MiB (target ≤ 300 MiB: {'met' if worst[1] <= 300 * 1024 else 'NOT met'}).")
    if args.baseline:
        with open(args.baseline) as f:
            base = json.load(f)
        out["baseline"] = {"file": args.baseline, "factor": base["meta"].get("factor"), "ratio_s_per_gb": {}}
        parts = []
        for scen, s in out["scenarios"].items():
            bs = base["scenarios"].get(scen, {}).get("c_s_per_gb")
            if bs and s["c_s_per_gb"]:
                r = s["c_s_per_gb"] / bs
                out["baseline"]["ratio_s_per_gb"][scen] = r
                parts.append(f"{scen} {r:.2f}")
        lines.append(f"Seconds per GB against factor {base['meta'].get('factor')} "
                     f"({os.path.basename(args.baseline)}), target ≤ 1.20: " + ", ".join(parts) + ".")
    lines.append(
        f"Factor {meta.get('factor')}: pgbench scale {meta.get('pg_scale')}, {meta.get('files_count')} files, "
        f"{meta.get('images')} images sharing a {meta.get('layer_mib')} MiB layer; data per round "
        f"{int(meta.get('data_bytes_round1', 0)) / 1e9:.2f} GB; {meta.get('rounds')} round(s); load average "
        f"{meta.get('loadavg_start')} → {meta.get('loadavg_end')}; {meta.get('total_seconds')} s in all.")
    text = "\n".join(lines)
    print(text)
    out["markdown"] = text
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--interval", type=float, default=0.1)
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    for name in ("state", "same"):
        s = sub.add_parser(name)
        s.add_argument("--pg-url", required=True)
        s.add_argument("--files-dir", required=True)
        s.add_argument("--out" if name == "state" else "--ref", required=True)
        s.add_argument("images", nargs="+")
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--baseline")
    args = ap.parse_args()
    return {"run": run, "state": state, "same": same, "report": report}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
