"""Why a forked process's pages stopped being shared: its private pages, compared with its parent's.

    python benchmarks/page_sharing.py WORKER_PID PARENT_PID   (root, or the processes' owner)

For every page the worker maps exclusively (``/proc/PID/pagemap``: present,
bit 56 "exclusively mapped"), the page at the same address in the parent (the
preloader, or the master of stock ``--preload``) is read from
``/proc/PID/mem`` and the two are compared 8 bytes at a time:

- ``identical``: the worker's copy has the same bytes: the page was copied by
  a write that was undone later, in CPython mostly a reference count that went
  up and came back down (an object read during a request);
- ``<=4 words`` / ``<=16 words``: a few words changed: reference counts or
  pointers of objects that stay referenced (caches, the objects of one
  request still held), the collector's links;
- ``<=128 words`` / ``>128 words``: much of the page was rewritten: memory
  freed in the parent and reused by the worker for new objects;
- ``parent-zero`` / ``new-mapping``: memory the parent never used.

Sizes in MiB per kind of mapping (anonymous memory: pymalloc's arenas and
large allocations; ``[heap]``: malloc's brk heap; ``so-data``: writable
data of shared libraries). Used for docs/memory.md.
"""

import collections
import struct
import sys

PAGE = 4096
KINDS = ("identical", "<=4 words", "<=16 words", "<=128 words", ">128 words", "parent-zero", "new-mapping", "unreadable")


def mappings(pid):
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


def kind_of_mapping(name, perm):
    if not name:
        return "anon"
    if name.startswith("["):
        return name
    if ".so" in name or "/python" in name:
        return "so-data" if "w" in perm else "so-ro"
    return "file"


def kind_of_page(mine, theirs):
    if theirs == b"\0" * PAGE:
        return "parent-zero"
    if mine == theirs:
        return "identical"
    a = struct.unpack("<%dQ" % (PAGE // 8), mine)
    b = struct.unpack("<%dQ" % (PAGE // 8), theirs)
    words = sum(1 for x, y in zip(a, b) if x != y)
    for limit in (4, 16, 128):
        if words <= limit:
            return "<=%d words" % limit
    return ">128 words"


def classify(pid, parent):
    """{mapping kind: Counter(page kind -> pages)} of ``pid``'s exclusively mapped pages."""
    parent_maps = mappings(parent)
    stats = collections.defaultdict(collections.Counter)
    with open("/proc/%d/pagemap" % pid, "rb", buffering=0) as pagemap, \
            open("/proc/%d/mem" % pid, "rb", buffering=0) as mem, \
            open("/proc/%d/mem" % parent, "rb", buffering=0) as parent_mem:
        for lo, hi, perm, name in mappings(pid):
            where = kind_of_mapping(name, perm)
            if where in ("[vvar]", "[vsyscall]", "[vdso]"):
                continue
            pagemap.seek(lo // PAGE * 8)
            entries = pagemap.read((hi - lo) // PAGE * 8)
            for i in range(len(entries) // 8):
                entry = struct.unpack_from("<Q", entries, i * 8)[0]
                if not (entry >> 63) & 1 or not (entry >> 56) & 1:
                    continue  # not present, or shared with another process
                address = lo + i * PAGE
                if not any(plo <= address < phi for plo, phi, _, _ in parent_maps):
                    stats[where]["new-mapping"] += 1
                    continue
                try:
                    mem.seek(address)
                    mine = mem.read(PAGE)
                    parent_mem.seek(address)
                    theirs = parent_mem.read(PAGE)
                except OSError:
                    stats[where]["unreadable"] += 1
                    continue
                stats[where][kind_of_page(mine, theirs)] += 1
    return stats


def format_stats(stats):
    lines, total = [], collections.Counter()
    mib = PAGE / (1024 * 1024)
    for where, counts in sorted(stats.items(), key=lambda kv: -sum(kv[1].values())):
        total.update(counts)
        lines.append("%-10s %7.2f MiB  %s" % (where, sum(counts.values()) * mib, ", ".join(
            "%s %.2f" % (k, counts[k] * mib) for k in KINDS if counts[k])))
    lines.append("%-10s %7.2f MiB  %s" % ("total", sum(total.values()) * mib, ", ".join(
        "%s %.2f" % (k, total[k] * mib) for k in KINDS if total[k])))
    return "\n".join(lines)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit(__doc__.splitlines()[2].strip())
    print(format_stats(classify(int(args[0]), int(args[1]))))


if __name__ == "__main__":
    main()
