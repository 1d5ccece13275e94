#!/usr/bin/env python3
"""Helpers of bench/restore.sh: what the stack must look like after a restore,
whether it does, and when each step of stack-backup's restore ran.

    restore_check.py reference --manifest M --checksums C --pg-url URL --files-dir D --out REF
    restore_check.py check --ref REF --pg-url URL --files-dir D
    restore_check.py stamp --steps OUT.tsv      # filter: stdin -> stdout
    restore_check.py sample --pid PID [--dir D]... --out OUT.tsv [--memory MEM.tsv]

`reference` reads the backup set's manifest.json and CHECKSUM.sha256 (dumped
by stock restic) and the live stack, checks that the live stack is exactly
the set (row counts, image IDs, every file's SHA-256), and writes REF: per
table the row count and a content hash (sum of hashtext() over the rows),
the image IDs, every file's SHA-256 and mode. Exit 1 when the live stack is
not the set.

`check` compares the live stack with REF. Contents (tables, rows, image IDs,
the file list and every file's SHA-256) must match: exit 1 otherwise. Modes,
owners and modification times that differ are reported, not failed.

`stamp` copies stack-backup's output through and times it: the moment each
chunk arrives. At the end it writes OUT.tsv with one row per phase:
planning (until the first line), opening the repository again, the seven
steps of the chain ("[n/7] name … ok"), and the finish (dropping the kept
originals) until the output closes.

`sample` watches a running restore (PID and its descendants) five times a
second until it exits: which tools run (pg_restore, docker load, restic
dump/restore, pg_dump, docker save, psql, and the measured command itself
unless it is a shell) with their RSS, and which of the given directories
(staging, kept originals) exist; OUT.tsv has, per label, when it was first
and last seen, for how long, and the largest RSS seen. --memory MEM.tsv
also writes the measured command's RSS and peak RSS (VmHWM) at each sample.

The database password comes from PGPASSWORD. Standard library only.
"""

import argparse
import bisect
import hashlib
import json
import os
import re
import subprocess
import sys
import time


# --- live state ------------------------------------------------------------

def psql(url, sql):
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        check=True, capture_output=True, text=True,
    )
    return out.stdout


def db_state(url):
    """{ "schema.table": [rows, content hash] } of every user table."""
    tables = psql(
        url,
        "SELECT schemaname || '.' || tablename, format('%I.%I', schemaname, tablename) "
        "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    ).split("\n")
    state = {}
    for line in filter(None, tables):
        name, quoted = line.split("|", 1)
        rows, h = psql(
            url,
            f"SELECT count(*), coalesce(sum(hashtext(t::text)::numeric), 0) FROM {quoted} t",
        ).strip().split("|")
        state[name] = [int(rows), h]
    return state


def image_ids(refs):
    ids = {}
    for r in refs:
        p = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", r],
                           capture_output=True, text=True)
        ids[r] = p.stdout.strip() if p.returncode == 0 else None
    return ids


def files_state(root):
    """{ relpath: [sha256, mode, uid, gid, mtime_ns] } of every file under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[os.path.relpath(p, root)] = [h.hexdigest(), st.st_mode & 0o7777,
                                             st.st_uid, st.st_gid, st.st_mtime_ns]
    return out


# --- the set ---------------------------------------------------------------

def parse_checksums(text):
    sums = {}
    for line in text.splitlines():
        if not line:
            continue
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        digest, name = line[:64], line[66:]
        if escaped:
            name = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "\\": "\\"}.get(m[1], m[1]), name)
        sums[name] = digest
    return sums


def reference(args):
    with open(args.manifest) as f:
        manifest = json.load(f)
    with open(args.checksums) as f:
        sums = parse_checksums(f.read())
    comps = manifest["components"]
    pg = [c for c in comps.values() if c.get("kind") == "postgres"]
    images = {c["reference"]: c["id"] for c in comps.values() if c.get("kind") == "docker-image"}
    files_dir = os.path.realpath(args.files_dir)
    paths = [c for c in comps.values()
             if c.get("kind") == "path" and os.path.realpath(c["source"]) == files_dir]
    if len(pg) != 1 or not paths:
        sys.exit(f"restore_check: the set has {len(pg)} database(s) and "
                 f"{len(paths)} path(s) for {files_dir}; expected 1 and 1")
    prefix = paths[0]["path"].rstrip("/") + "/"
    set_files = {k[len(prefix):]: v for k, v in sums.items() if k.startswith(prefix)}

    db = db_state(args.pg_url)
    ids = image_ids(sorted(images))
    files = files_state(files_dir)

    problems = []
    counts = {t: v[0] for t, v in db.items()}
    if counts != pg[0]["row_counts"]:
        problems.append(f"row counts: live {counts}, set {pg[0]['row_counts']}")
    for ref, want in images.items():
        if ids[ref] != want:
            problems.append(f"image {ref}: live {ids[ref]}, set {want}")
    live_sums = {k: v[0] for k, v in files.items()}
    if live_sums != set_files:
        missing = sorted(set(set_files) - set(live_sums))
        extra = sorted(set(live_sums) - set(set_files))
        changed = sorted(k for k in set(set_files) & set(live_sums) if set_files[k] != live_sums[k])
        problems.append(f"{files_dir}: {len(missing)} file(s) missing, {len(extra)} extra, "
                        f"{len(changed)} different from the set (e.g. {(missing + extra + changed)[:3]})")
    if problems:
        print("the live stack is not the backup set:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    ref = {
        "set": manifest.get("name"),
        "db": db,
        "images": ids,
        "files": files,
        "files_bytes": sum(os.path.getsize(os.path.join(files_dir, k)) for k in files),
    }
    with open(args.out, "w") as f:
        json.dump(ref, f)
    print(f"{len(db)} tables ({sum(v[0] for v in db.values()):,} rows), "
          f"{len(ids)} images, {len(files):,} files: the live stack is set {manifest.get('name')}")


def check(args):
    with open(args.ref) as f:
        ref = json.load(f)
    problems, notes = [], []
    db = db_state(args.pg_url)
    if db != ref["db"]:
        diff = [f"{t}: {db.get(t, 'missing')} (expected {v})" for t, v in ref["db"].items()
                if db.get(t) != v]
        diff += [f"{t}: not expected" for t in db if t not in ref["db"]]
        problems.append("database: " + "; ".join(diff))
    ids = image_ids(sorted(ref["images"]))
    for r, want in ref["images"].items():
        if ids[r] != want:
            problems.append(f"image {r}: {ids[r]} (expected {want})")
    files = files_state(args.files_dir)
    want = ref["files"]
    missing = sorted(set(want) - set(files))
    extra = sorted(set(files) - set(want))
    common = set(want) & set(files)
    changed = sorted(k for k in common if files[k][0] != want[k][0])
    if missing or extra or changed:
        problems.append(f"files: {len(missing)} missing, {len(extra)} extra, {len(changed)} with other "
                        f"content (e.g. {(missing + extra + changed)[:3]})")
    for i, what in ((1, "mode"), (2, "owner"), (4, "mtime")):
        n = sum(1 for k in common if files[k][i] != want[k][i])
        if n:
            notes.append(f"{n} file(s) with another {what}")
    summary = (f"{len(db)} tables, {sum(v[0] for v in db.values()):,} rows; "
               f"{sum(1 for r in ids if ids[r] == ref['images'][r])}/{len(ref['images'])} image IDs; "
               f"{len(files):,} files")
    if problems:
        print("MISMATCH: " + " | ".join(problems + notes))
        sys.exit(1)
    print("ok: " + summary + ("; " + ", ".join(notes) if notes else ""))


# --- stamp ---------------------------------------------------------------------

ELLIPSIS = "\u2026".encode()
MARK = re.compile(rb"\[(\d+)/(\d+)\] ([^\n]*?) " + ELLIPSIS + rb" ")
DONE = re.compile(rb"(?:(?<=" + ELLIPSIS + rb" )|(?<=\n))(ok|FAILED)\n")


def stamp(args):
    t0 = time.monotonic()
    offsets, times = [], []
    buf = bytearray()
    out = sys.stdout.buffer
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        offsets.append(len(buf))
        times.append(time.monotonic() - t0)
        buf += b
        out.write(b)
        out.flush()
    t_end = time.monotonic() - t0

    def at(pos):
        i = bisect.bisect_right(offsets, pos) - 1
        return times[max(i, 0)] if times else 0.0

    data = bytes(buf)
    rows = []
    marks = list(MARK.finditer(data))
    header = data.find(b"Restore backup set ")
    if marks and times and header >= 0:
        rows.append(("0. plan: open the repository, read the index and the set's manifest", 0.0, at(header), "ok"))
        rows.append(("0. open the repository again, lock, plan again", at(header), at(marks[0].start()), "ok"))
    last_end = None
    for m in marks:
        n, name = int(m[1]), m[3].decode(errors="replace")
        start = at(m.start())
        if last_end is not None and start - last_end > 0.05:
            what = ("open the repository again (index reload after the pre-restore set)"
                    if n == 5 else "between the steps")
            rows.append((f"{n - 1}-{n}. {what}", last_end, start, "ok"))
        if data[m.end():m.end() + 8] == b"skipped:":
            rows.append((f"{n}. {name}", start, start, "skipped"))
            last_end = start
            continue
        d = DONE.search(data, m.end())
        if not d:
            rows.append((f"{n}. {name}", start, t_end, "unfinished"))
            last_end = t_end
            break
        end = at(d.start(1))
        rows.append((f"{n}. {name}", start, end, d[1].decode().lower()))
        last_end = end
    if last_end is not None:
        rows.append(("8. after the chain: drop the kept originals (old database, old directory), exit",
                     last_end, t_end, "ok"))
    with open(args.steps, "w") as f:
        f.write("phase\tstart_s\tend_s\tstate\n")
        for name, s, e, st in rows:
            f.write(f"{name}\t{s:.3f}\t{e:.3f}\t{st}\n")


# --- sample ---------------------------------------------------------------------

def label_of(argv):
    """A short label for a process of a restore, or None."""
    if not argv:
        return None
    prog = os.path.basename(argv[0])
    args = argv[1:]
    if "--version" in args or "-V" in args:
        return None
    sub = next((a for a in args if not a.startswith("-")), "")
    if prog == "docker" and sub in ("load", "save"):
        return f"docker {sub}"
    if prog == "restic" and sub in ("dump", "restore"):
        return f"restic {sub}"
    if prog in ("pg_restore", "pg_dump", "pg_dumpall", "psql"):
        return prog
    return None


def descendants(root):
    """(pid, argv, depth) of every living descendant of root."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        for c in children.get(pid, []):
            todo.append((c, depth + 1))
            try:
                with open(f"/proc/{c}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            except OSError:
                continue
            out.append((c, argv, depth + 1))
    return out


def memory_kib(pid):
    """(VmRSS, VmHWM) of pid in KiB, zeros when gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, hwm


def sample(args):
    """Until --pid exits: every --interval seconds, which tools run under it
    (and their RSS) and which of the --dir directories exist. Writes label,
    first and last time seen, the seconds seen (samples x interval) and the
    largest RSS seen; with --memory, the timeline of the measured command's
    own RSS and peak (VmHWM)."""
    t0 = time.monotonic()
    seen = {}
    timeline = []
    while os.path.exists(f"/proc/{args.pid}"):
        t = time.monotonic() - t0
        now = {}
        for pid, argv, depth in descendants(args.pid):
            lab = label_of(argv)
            if depth == 1:
                rss, hwm = memory_kib(pid)
                timeline.append((t, rss, hwm))
                if argv and os.path.basename(argv[0]) not in ("bash", "sh", "env"):
                    lab = os.path.basename(argv[0])
            if lab:
                now[lab] = max(now.get(lab, 0), memory_kib(pid)[0])
        for d in args.dir:
            if os.path.isdir(d):
                now[f"directory {os.path.basename(d)} exists"] = 0
        for lab, rss in now.items():
            first, _, n, peak = seen.get(lab, (t, t, 0, 0))
            seen[lab] = (first, t, n + 1, max(peak, rss))
        time.sleep(args.interval)
    with open(args.out, "w") as f:
        f.write("label\tfirst_s\tlast_s\tseen_s\tpeak_rss_kib\n")
        for lab, (first, last, n, peak) in sorted(seen.items(), key=lambda kv: kv[1][0]):
            f.write(f"{lab}\t{first:.2f}\t{last:.2f}\t{n * args.interval:.2f}\t{peak}\n")
    if args.memory:
        with open(args.memory, "w") as f:
            f.write("t_s\trss_kib\thwm_kib\n")
            for t, rss, hwm in timeline:
                f.write(f"{t:.2f}\t{rss}\t{hwm}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--manifest", required=True)
    r.add_argument("--checksums", required=True)
    r.add_argument("--pg-url", required=True)
    r.add_argument("--files-dir", required=True)
    r.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("--ref", required=True)
    c.add_argument("--pg-url", required=True)
    c.add_argument("--files-dir", required=True)
    s = sub.add_parser("stamp")
    s.add_argument("--steps", required=True)
    p = sub.add_parser("sample")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--out", required=True)
    p.add_argument("--memory")
    args = ap.parse_args()
    {"reference": reference, "check": check, "stamp": stamp, "sample": sample}[args.cmd](args)


if __name__ == "__main__":
    main()
