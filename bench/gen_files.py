#!/usr/bin/env python3
"""Generate (or change) the benchmark's tree of small files.

    gen_files.py create DIR COUNT      # DIR must not exist yet
    gen_files.py change DIR PERCENT SEED

`create` writes COUNT files of mixed sizes and kinds, deterministically
(seed 1): about 60 % compressible text (100 B - 8 KiB), 38 % random bytes
(512 B - 16 KiB) and 2 % larger files (64 - 256 KiB, half text, half
random), 100 files per directory, two directory levels. Prints the number
of files and bytes written.

`change` picks PERCENT % of the files (seeded, so a run is reproducible) and
changes each: half are rewritten with new content of the same kind, half get
a few KiB appended. That is "a day of change" for a directory of uploads.
Prints the number of files changed and bytes written.

Standard library only.
"""

import os
import random
import sys

WORDS = (
    "the order customer invoice payment shipped pending refund account "
    "address street city postal code country total amount currency euro "
    "dollar tax discount product item quantity price stock warehouse "
    "delivery tracking number status created updated deleted user admin "
    "session token cart checkout review rating comment report daily weekly "
    "monthly summary error warning info debug request response latency"
).split()

PER_DIR = 100
DIRS_PER_TOP = 10


def text(rng, size):
    out = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        line = f"{rng.randint(1, 99999):05d} {line}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def content(rng, kind, size):
    if kind == "txt":
        return text(rng, size)
    return rng.randbytes(size)


def pick(rng):
    """(kind, size) of a new file."""
    r = rng.random()
    if r < 0.60:
        return "txt", rng.randint(100, 8 * 1024)
    if r < 0.98:
        return "bin", rng.randint(512, 16 * 1024)
    big = rng.randint(64 * 1024, 256 * 1024)
    return ("txt" if rng.random() < 0.5 else "bin"), big


def path_of(root, i, kind):
    d = i // PER_DIR
    return os.path.join(
        root, f"d{d // DIRS_PER_TOP:03d}", f"s{d % DIRS_PER_TOP:02d}", f"f{i:06d}.{kind}"
    )


def create(root, count):
    if os.path.exists(root):
        sys.exit(f"gen_files.py: {root} exists")
    rng = random.Random(1)
    total = 0
    for i in range(count):
        kind, size = pick(rng)
        p = path_of(root, i, kind)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        data = content(rng, kind, size)
        with open(p, "wb") as f:
            f.write(data)
        total += len(data)
    print(count, total)


def change(root, percent, seed):
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            files.append(os.path.join(dirpath, name))
    rng = random.Random(seed)
    n = max(1, round(len(files) * percent / 100))
    chosen = rng.sample(files, n)
    written = 0
    for k, p in enumerate(chosen):
        kind = "txt" if p.endswith(".txt") else "bin"
        if k % 2 == 0:
            size = os.path.getsize(p)
            data = content(rng, kind, max(size, 64))
            with open(p, "wb") as f:
                f.write(data)
        else:
            data = content(rng, kind, rng.randint(256, 4096))
            with open(p, "ab") as f:
                f.write(data)
        written += len(data)
    print(n, written)


def main(argv):
    if len(argv) == 4 and argv[1] == "create":
        create(argv[2], int(argv[3]))
    elif len(argv) == 5 and argv[1] == "change":
        change(argv[2], float(argv[3]), int(argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
