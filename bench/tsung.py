#!/usr/bin/env python3
"""tsung, the second witness: runs a tsung 1.7 scenario (bench/tsung/)
against a running XMPP server and appends its outcome to the same JSON
lines chorus-bench writes, so `chorus-bench table` shows both.

  tsung.py idle --port P --pid PID --sessions 5000 --label chorus --out R
  tsung.py chat --port P --pid PID --users 1000 --rate 2000 --secs 30 ...

The accounts (PREFIX0..PREFIXn-1, one password) must exist: bench/run.sh
provisions them with `chorus-bench provision` first.

idle: every session connects, does STARTTLS, SASL PLAIN, binds, sends
initial presence and holds. The server's RSS is read (from /proc) before
the first connection and at the plateau: once the server holds every
session (counted as established TCP connections on its port, a witness
independent of tsung) and a settling time has passed. KiB per session is
(plateau - baseline) / sessions.

chat: tsung's own delivery latency (each message carries its send time,
the receiving session takes the difference) for every message, read from
tsung-fullstats.log; p50/p99/p99.9 are computed here from all samples.
Everything listens on 127.0.0.1 and stops by itself.
"""

import argparse
import glob
import json
import os
import re
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def established(port):
    """Established TCP connections whose local port is the server's."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def render(template, path, values):
    with open(os.path.join(HERE, "tsung", template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise SystemExit(f"{template}: unfilled {sorted(set(left))}")
    with open(path, "w") as f:
        f.write(text)


def users_csv(path, prefix, password, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"{prefix}{i};{password}\n")


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_tsung(work, config):
    logdir = os.path.join(work, "log")
    os.makedirs(logdir, exist_ok=True)
    out = open(os.path.join(work, "tsung.out"), "w")
    # HOME: tsung keeps state under ~/.tsung; one per run keeps runs apart.
    env = dict(os.environ, HOME=work)
    return subprocess.Popen(["tsung", "-f", config, "-l", logdir, "start"],
                            stdout=out, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=raise_nofile)


def fullstats(work):
    files = glob.glob(os.path.join(work, "log", "*", "tsung-fullstats.log"))
    if not files:
        raise SystemExit(f"tsung wrote no tsung-fullstats.log under {work}/log")
    with open(files[0]) as f:
        return f.read()


def samples(text, name):
    pat = r"\{sample,\s*" + re.escape(name) + r",\s*([0-9.eE+-]+)\s*\}"
    return [float(v) for v in re.findall(pat, text)]


def error_counts(text):
    errs = {}
    for name, n in re.findall(r"\{count,\s*(error_[a-z_0-9]+),\s*([0-9]+)\s*\}", text):
        errs[name] = errs.get(name, 0) + int(n)
    for name in re.findall(r"\{count,\s*(error_[a-z_0-9]+)\s*\}", text):
        errs[name] = errs.get(name, 0) + 1
    return errs


def quantile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[i]


def emit(args, scenario, metrics, errors, notes):
    o = {"server": args.label, "scenario": scenario, "metrics": metrics,
         "errors": errors, "notes": notes}
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    print(f"[{args.label}] {scenario}: {shown} errors={errors}"
          + (f" ({'; '.join(notes)})" if notes else ""), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(o) + "\n")


def run_idle(args):
    n = args.sessions
    work = os.path.join(args.work, f"idle-{n}")
    os.makedirs(work, exist_ok=True)
    csv = os.path.join(work, "users.csv")
    users_csv(csv, args.prefix, args.password, n)
    # tsung may launch users slower than asked (its own VM shares the two
    # cores): the phase lasts twice as long as needed and stops at n users.
    arrival_secs = 3 * max(1, -(-n // args.arrival_rate)) + 2
    # Held long enough that the first session is still there when the last
    # one arrives, however late tsung launches it, and the plateau settles.
    hold = arrival_secs + 2 * args.settle_secs + 10
    cfg = os.path.join(work, "idle.xml")
    render("idle.xml.in", cfg, {
        "PORT": args.port, "DOMAIN": args.domain, "USERS": n, "USERS_CSV": csv,
        "ARRIVAL_SECS": arrival_secs, "ARRIVAL_RATE": args.arrival_rate,
        "HOLD_SECS": hold})
    time.sleep(args.settle_secs)
    base = rss_kib(args.pid)
    proc = start_tsung(work, cfg)
    held, plateau, settled_at = 0, None, None
    deadline = time.monotonic() + hold + 60
    # If tsung has not launched every user when its arrival phase ends,
    # the plateau is what it did launch (reported as errors below).
    phase_end = time.monotonic() + arrival_secs + 2
    while proc.poll() is None and time.monotonic() < deadline:
        held = max(held, established(args.port))
        if (held >= n or time.monotonic() >= phase_end) and settled_at is None:
            settled_at = time.monotonic() + args.settle_secs
        if settled_at is not None and time.monotonic() >= settled_at:
            plateau = rss_kib(args.pid)
            now_held = established(args.port)
            break
        time.sleep(0.5)
    notes = []
    if plateau is None:
        plateau, now_held = rss_kib(args.pid), established(args.port)
        notes.append(f"only {held} of {n} sessions were ever held at once")
    proc.wait()
    text = fullstats(work)
    logins = len(samples(text, "tr_authenticate"))
    errs = error_counts(text)
    if errs:
        notes.append("tsung errors: " + ", ".join(f"{k}={v}" for k, v in sorted(errs.items())))
    if now_held < n:
        notes.append(f"{now_held} of {n} sessions held at the plateau")
    metrics = {
        "sessions_held": now_held,
        "logins_completed": logins,
        "server_rss_baseline_mib": base / 1024,
        "server_rss_mib": plateau / 1024,
        "kib_per_session": (plateau - base) / max(1, now_held),
    }
    errors = max(0, n - now_held) + sum(errs.values())
    emit(args, f"tsung_idle_{n}", metrics, errors, notes)


def run_chat(args):
    users, rate = args.users, args.rate
    work = os.path.join(args.work, f"chat-{users}-{rate}")
    os.makedirs(work, exist_ok=True)
    csv = os.path.join(work, "users.csv")
    users_csv(csv, args.prefix, args.password, users)
    arrival_secs = 2 * max(1, -(-users // args.arrival_rate)) + 2
    interval = users / rate
    rounds = max(1, int(args.secs * rate / users))
    cfg = os.path.join(work, "chat.xml")
    render("chat.xml.in", cfg, {
        "PORT": args.port, "DOMAIN": args.domain, "USERS": users, "USERS_CSV": csv,
        "ARRIVAL_SECS": arrival_secs, "ARRIVAL_RATE": args.arrival_rate,
        "START_WAIT_SECS": arrival_secs + 5, "ROUNDS": rounds,
        "INTERVAL_SECS": f"{interval:.6f}", "RANDOM": "true" if args.poisson else "false"})
    proc = start_tsung(work, cfg)
    # Server CPU while the messages flow (from the first sender's start to
    # the last one's end).
    time.sleep(arrival_secs + 5)
    cpu0, t0 = cpu_secs(args.pid), time.monotonic()
    cpu1, t1 = cpu0, t0
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_kib(args.pid))
        if time.monotonic() - t0 < args.secs:
            cpu1, t1 = cpu_secs(args.pid), time.monotonic()
        time.sleep(0.5)
    text = fullstats(work)
    lat = sorted(samples(text, "xmpp_msg_latency"))
    sent = users * rounds
    errs = error_counts(text)
    notes = [] if not errs else ["tsung errors: " + ", ".join(f"{k}={v}" for k, v in sorted(errs.items()))]
    metrics = {
        "offered_msgs_per_sec": rate,
        "messages_sent": sent,
        "messages_timed": len(lat),
        "latency_p50_ms": quantile(lat, 0.50),
        "latency_p99_ms": quantile(lat, 0.99),
        "latency_p999_ms": quantile(lat, 0.999),
        "latency_max_ms": lat[-1] if lat else float("nan"),
        "server_cpu_cores": (cpu1 - cpu0) / max(1e-9, t1 - t0),
        "server_rss_peak_mib": peak / 1024,
    }
    # tsung times at most one message per read of a socket, so messages
    # that arrive together go untimed; more than 10 % is taken as loss.
    missing = sent - len(lat)
    errors = missing if missing > sent // 10 else 0
    if missing > 0:
        notes.append(f"{missing} of {sent} messages untimed (tsung times one per socket read)")
    emit(args, f"tsung_one2one_{rate}", metrics, errors + sum(errs.values()), notes)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=["idle", "chat"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--domain", default="bench.test")
    p.add_argument("--label", default="server")
    p.add_argument("--out")
    p.add_argument("--work", required=True, help="directory for tsung's files")
    p.add_argument("--prefix", default="bench")
    p.add_argument("--password", default="bench-password-1")
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--arrival-rate", type=int, default=250, help="new sessions per second")
    p.add_argument("--settle-secs", type=int, default=5)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--rate", type=int, default=2000, help="messages per second in all")
    p.add_argument("--secs", type=int, default=30, help="seconds of sending")
    p.add_argument("--poisson", action="store_true", help="exponential think times")
    args = p.parse_args()
    if args.scenario == "idle":
        run_idle(args)
    else:
        run_chat(args)


if __name__ == "__main__":
    sys.exit(main())
