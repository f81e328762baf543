"""Groups a heaptrack profile's peak memory by what holds it, per session.

Reads the flame-graph stacks heaptrack_print writes with
``--flamegraph-cost-type peak`` (one line per stack: frames separated by
``;``, then the bytes held at the peak) and prints, largest first, the bytes
each group held, divided by the number of sessions. A stack belongs to the
first group whose marker occurs in it; the rest are named by their deepest
source frame outside the allocator. bench/profile.sh runs it after the
memory profile (memory-top.txt).

    python3 bench/heap_groups.py STACKS SESSIONS
"""

import collections
import sys

GROUPS = [
    ("rustls receive buffer", "prepare_read (buffers.rs)"),
    ("rustls handshake buffer", "default (handshake.rs)"),
    ("RocksDB (node-wide)", "rocksdb::"),
    ("tantivy (node-wide)", "tantivy"),
    ("configuration (node-wide)", "chorus_core::config::Config"),
    ("connection task (tokio spawn)", "spawn<> (mod.rs)"),
    ("tokio mpsc channel", "channel<> (bounded.rs)"),
    ("TLS stream (Box<TlsStream>)", "(tokio_rustls::server::TlsStream<>)"),
    ("router entry list", "bind (router.rs)"),
    ("XML tree builder", "tree_builder.rs"),
    ("XML element copies", "clone (element.rs)"),
    ("rustls, other", "rustls"),
    ("rxml", "rxml"),
]


def group(stack: str) -> str:
    for name, marker in GROUPS:
        if marker in stack:
            return name
    frames = [f for f in stack.split(";")
              if ".rs)" in f and "alloc" not in f and "mod.rs" not in f and "boxed.rs" not in f]
    return "other: " + (frames[-1] if frames else stack.split(";")[-1])[:80]


def main() -> None:
    path, sessions = sys.argv[1], int(sys.argv[2])
    held: collections.Counter[str] = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if n.isdigit():
                held[group(stack)] += int(n)
    total = sum(held.values())
    print(f"heap at the peak: {total / 2**20:.1f} MiB, {total / sessions / 1024:.2f} KiB "
          f"per session over {sessions} sessions (node-wide groups included)")
    for name, n in held.most_common(30):
        print(f"{n / sessions / 1024:7.2f} KiB/session {n / 2**20:7.2f} MiB  {name}")


if __name__ == "__main__":
    main()
