#!/usr/bin/env python3
"""The seed's benchmark table with the seed's own tools (issue 10, item 4).

Runs unmodified sockperf, iperf3 and nginx+wrk over plain TCP and under `ism-sim run`
(SMC-D over a process board: loopback copy, loopback no-copy, LPAR), in interleaved rounds
(every round measures every cell once, in a rotated order, so that drift of the machine
falls on all cells alike), and prints medians with their spread and ratios to TCP beside
the ratios the loopback-ism series reported. Writes the samples as JSON and the ratios as
an SVG chart. Started by scripts/seed-bench.sh, which builds the release binaries first.

Nothing here is a test: a cell whose program fails is reported as failed (with its log),
and the run goes on.
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# Transports: name -> (board kind or None for plain TCP, no-copy, interrupt thread instead
# of the peer bell (`--no-peer-bell`; the bell is the default on loopback boards since
# 2026-11-28), busy-poll microseconds or 0).
TRANSPORTS = {
    "tcp": (None, False, False, 0),
    "lo": ("loopback", False, False, 0),
    "lo-nocopy": ("loopback", True, False, 0),
    "lo-irq": ("loopback", False, True, 0),
    "lo-busy": ("loopback", False, False, 50),
    "lpar": ("lpar", False, False, 0),
}

# What the loopback-ism series reported (SMC-D loopback against TCP, ratio SMC/TCP):
# the RFC with no-copy and the merged series (the cover letters of the Linux patches,
# "net/smc: introduce loopback-ism", v1 RFC and v8). None: not reported.
SEED = {
    "sockperf-bw": {"rfc": 1.67, "merged": 1.67},
    "sockperf-lat": {"rfc": 0.51, "merged": 0.56},
    "msg-rate": {"rfc": 2.02, "merged": 1.86},
    "iperf3": {"rfc": 1.89, "merged": None},
    "nginx-wrk": {"rfc": 1.47, "merged": 1.34},
}

# The targets on this machine (ratio SMC-D/TCP; latency: at most, others: at least).
TARGETS = {
    "sockperf-bw": 3.0,
    "sockperf-lat": 0.2,
    "msg-rate": 10.0,
    "iperf3": 3.0,
    "nginx-wrk": 2.0,
}

# tool -> (unit, higher is better, description)
TOOLS = {
    "sockperf-bw": ("MB/s", True, "sockperf throughput, 64000 B messages"),
    "sockperf-lat": ("us", False, "sockperf ping-pong, 14 B, mean RTT/2"),
    "msg-rate": ("rt/s", True, "sockperf ping-pong, 100 B, round trips per second"),
    "iperf3": ("MB/s", True, "iperf3, 1 stream, received"),
    "nginx-wrk": ("req/s", True, "nginx (615 B file) with wrk, 1 thread, 8 connections"),
}


class CellFailed(Exception):
    """A program of a cell failed; the message names it and carries its log."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    """Waits until something listens on 127.0.0.1:port (a plain connect succeeds)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise CellFailed(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise CellFailed(f"nothing listens on port {port} after {timeout} s")


# -- parsing the programs' own summaries (golden outputs in scripts/test_seed_bench.py) --

def parse_sockperf_bw(out):
    """MB/s from `sockperf throughput`'s summary."""
    m = re.search(r"BandWidth is ([0-9.]+) MBps", out)
    if not m:
        raise CellFailed(f"no bandwidth in sockperf's output:\n{out}")
    return float(m.group(1))


def parse_sockperf_lat(out):
    """Mean RTT/2 in µs from `sockperf ping-pong`'s summary."""
    m = re.search(r"Summary: Latency is ([0-9.]+) usec", out)
    if not m:
        raise CellFailed(f"no latency in sockperf's output:\n{out}")
    return float(m.group(1))


def parse_msg_rate(out):
    """Round trips per second of `sockperf ping-pong`: received replies / valid run time."""
    m = re.search(r"RunTime=([0-9.]+) sec; SentMessages=\d+; ReceivedMessages=(\d+)", out)
    if not m or float(m.group(1)) <= 0:
        raise CellFailed(f"no message count in sockperf's output:\n{out}")
    return int(m.group(2)) / float(m.group(1))


def parse_iperf3(out):
    """MB/s received, from `iperf3 -J`."""
    try:
        v = json.loads(out[out.index("{"):out.rindex("}") + 1])
        return v["end"]["sum_received"]["bits_per_second"] / 8e6
    except (ValueError, KeyError, TypeError) as e:
        raise CellFailed(f"iperf3's JSON: {e}:\n{out}")


def parse_wrk(out):
    """Requests per second from wrk's summary; failed requests make the cell fail."""
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise CellFailed(f"no Requests/sec in wrk's output:\n{out}")
    if re.search(r"Non-2xx or 3xx responses", out) or re.search(r"Socket errors", out):
        raise CellFailed(f"wrk saw errors:\n{out}")
    if float(m.group(1)) <= 0:
        raise CellFailed(f"no request answered:\n{out}")
    return float(m.group(1))


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.ism_sim = os.path.join(self.root, "target", "release", "ism-sim")
        self.dir = tempfile.mkdtemp(prefix="seed-bench-")
        # nginx's workers run as an unprivileged user: they must read the files.
        os.chmod(self.dir, 0o755)
        self.env = dict(os.environ, ISM_SIM_DIR=self.dir)
        self.boards = {}
        self.procs = []

    # -- process boards -----------------------------------------------------------------

    def board(self, kind):
        """The running board of `kind` (started on first use), by name."""
        name = f"seed-{kind}"
        if kind not in self.boards:
            log = open(os.path.join(self.dir, f"{name}.log"), "w")
            p = subprocess.Popen(
                [self.ism_sim, "board", "--kind", kind, "--name", name],
                env=self.env, stdout=log, stderr=log)
            sock = os.path.join(self.dir, f"{name}.sock")
            end = time.monotonic() + 10
            while not os.path.exists(sock):
                if p.poll() is not None or time.monotonic() > end:
                    raise SystemExit(f"seed-bench: board {kind} did not start (see {log.name})")
                time.sleep(0.05)
            self.boards[kind] = p
        return name

    def board_moves(self, name):
        out = subprocess.run([self.ism_sim, "board", "status", name, "--json"],
                             env=self.env, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        v = json.loads(out.stdout)
        return v.get("counters", {}).get("moves")

    def stop_boards(self):
        for p in self.boards.values():
            p.send_signal(signal.SIGINT)
        for p in self.boards.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.boards.clear()

    # -- running programs ---------------------------------------------------------------

    def command(self, transport, argv, core):
        kind, nocopy, irq, busy = TRANSPORTS[transport]
        cmd = list(argv)
        if kind is not None:
            run = [self.ism_sim, "run", "--board", self.board(kind), "--require-smc"]
            if nocopy:
                run.append("--nocopy")
            if irq:
                run.append("--no-peer-bell")
            if busy:
                run += ["--busy-poll", str(busy)]
            cmd = run + ["--"] + cmd
        if self.args.pin:
            cmd = ["taskset", "-c", str(core)] + cmd
        return cmd

    def start(self, transport, argv, name):
        log = open(os.path.join(self.dir, f"{name}.log"), "w")
        p = subprocess.Popen(self.command(transport, argv, 0), env=self.env,
                             stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        p.log_path = log.name
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.remove(p)

    def client(self, transport, argv, timeout):
        out = subprocess.run(self.command(transport, argv, 1), env=self.env,
                             capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if out.returncode != 0:
            raise CellFailed(f"{argv[0]} exited with {out.returncode}:\n{out.stdout}{out.stderr}")
        return out.stdout + out.stderr

    # -- the tools ----------------------------------------------------------------------

    def sockperf(self, transport, mode, size):
        port = free_port()
        srv = self.start(transport, ["sockperf", "server", "--tcp", "-i", "127.0.0.1",
                                     "-p", str(port)], f"sockperf-server-{transport}")
        try:
            wait_port(port, srv)
            out = self.client(transport, ["sockperf", mode, "--tcp", "-i", "127.0.0.1",
                                          "-p", str(port), "-m", str(size),
                                          "-t", str(self.args.secs)],
                              timeout=self.args.secs + 30)
        finally:
            self.stop(srv)
        return out

    def sockperf_bw(self, transport):
        return parse_sockperf_bw(self.sockperf(transport, "throughput", 64000))

    def sockperf_lat(self, transport):
        return parse_sockperf_lat(self.sockperf(transport, "ping-pong", 14))

    def msg_rate(self, transport):
        return parse_msg_rate(self.sockperf(transport, "ping-pong", 100))

    def iperf3(self, transport):
        port = free_port()
        srv = self.start(transport, ["iperf3", "-s", "-1", "--forceflush", "-p", str(port)],
                         f"iperf3-server-{transport}")
        try:
            # iperf3's server answers a plain probe connection with an error and exits
            # (-1): wait for its "listening" line instead.
            end = time.monotonic() + 10
            while "listening" not in open(srv.log_path).read():
                if srv.poll() is not None or time.monotonic() > end:
                    raise CellFailed("iperf3 server did not start:\n" + open(srv.log_path).read())
                time.sleep(0.05)
            out = self.client(transport, ["iperf3", "-c", "127.0.0.1", "-p", str(port),
                                          "-t", str(self.args.secs), "-J"],
                              timeout=self.args.secs + 30)
        finally:
            self.stop(srv)
        return parse_iperf3(out)

    def nginx_wrk(self, transport):
        port = free_port()
        www = os.path.join(self.dir, "www")
        os.makedirs(www, exist_ok=True)
        page = os.path.join(www, "615.html")
        with open(page, "wb") as f:
            f.write(bytes(random.Random(615).getrandbits(8) for _ in range(615)))
        os.chmod(www, 0o755)
        os.chmod(page, 0o644)
        conf = os.path.join(self.dir, f"nginx-{transport}.conf")
        with open(conf, "w") as f:
            # As root, nginx runs its workers as `nobody`: the library attaches each one
            # before it drops its privileges (docs/ism-run.md, "Limits").
            f.write(f"""daemon off;
master_process on;
worker_processes {self.args.nginx_workers};
error_log stderr warn;
pid {self.dir}/nginx-{transport}.pid;
events {{ use epoll; worker_connections 256; }}
http {{
    access_log off;
    sendfile {"on" if self.args.sendfile else "off"};
    client_body_temp_path {self.dir}/body; proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fcgi; uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
""")
        srv = self.start(transport, ["nginx", "-c", conf, "-p", self.dir],
                         f"nginx-{transport}")
        try:
            wait_port(port, srv)
            out = self.client(transport, ["wrk", "-t", "1", "-c", "8",
                                          "-d", f"{self.args.secs}s",
                                          f"http://127.0.0.1:{port}/615.html"],
                              timeout=self.args.secs + 30)
        finally:
            self.stop(srv, signal.SIGQUIT)
        return parse_wrk(out)

    def measure(self, tool, transport):
        fn = {"sockperf-bw": self.sockperf_bw, "sockperf-lat": self.sockperf_lat,
              "msg-rate": self.msg_rate, "iperf3": self.iperf3,
              "nginx-wrk": self.nginx_wrk}[tool]
        kind, _, _, _ = TRANSPORTS[transport]
        name = self.board(kind) if kind else None
        before = self.board_moves(name) if name else None
        value = fn(transport)
        if name:
            after = self.board_moves(name)
            # Observed, not assumed: the board moved data for this cell.
            if before is None or after is None or after <= before:
                raise CellFailed(f"the {kind} board moved nothing: not SMC-D")
        return value


def summary(samples):
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def fmt(v):
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(result):
    lines = []
    transports = result["transports"]
    head = "| figure | " + " | ".join(transports) + " | seed (RFC / merged) | target |"
    lines.append(head)
    lines.append("|---" * (len(transports) + 3) + "|")
    for tool in result["tools"]:
        unit, higher, _ = TOOLS[tool]
        cells = []
        tcp = result["cells"].get(f"{tool}/tcp")
        for t in transports:
            c = result["cells"].get(f"{tool}/{t}")
            if c is None or not c["samples"]:
                cells.append("failed")
                continue
            s = c["summary"]
            text = f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]"
            if t != "tcp" and tcp and tcp["samples"]:
                text += f" **{s['median'] / tcp['summary']['median']:.2f}×**"
            cells.append(text)
        seed = SEED[tool]
        seed_text = " / ".join("–" if v is None else f"{v:.2f}×" for v in seed.values())
        target = ("≤ " if not higher else "≥ ") + f"{TARGETS[tool]}×"
        lines.append(f"| {tool} ({unit}) | " + " | ".join(cells) + f" | {seed_text} | {target} |")
    return "\n".join(lines)


def svg(result):
    """Ratios to TCP per figure and transport, with the seed's ratio as a mark."""
    transports = [t for t in result["transports"] if t != "tcp"]
    tools = result["tools"]
    colors = {"lo": "#4e79a7", "lo-nocopy": "#59a14f", "lo-irq": "#b07aa1", "lo-busy": "#e15759",
              "lpar": "#f28e2b"}
    w, h, left, bottom, top = 760, 360, 60, 60, 30
    group = (w - left - 20) / max(len(tools), 1)
    bar = group / (len(transports) + 1.5)
    ratios = []
    for tool in tools:
        tcp = result["cells"].get(f"{tool}/tcp")
        for t in transports:
            c = result["cells"].get(f"{tool}/{t}")
            if tcp and c and tcp["samples"] and c["samples"]:
                r = c["summary"]["median"] / tcp["summary"]["median"]
                # Latency: lower is better; draw TCP/SMC so that higher is better everywhere.
                if not TOOLS[tool][1]:
                    r = 1 / r
                ratios.append((tool, t, r))
    top_ratio = max([r for _, _, r in ratios] + [2.5]) * 1.1
    y = lambda r: h - bottom - (h - bottom - top) * r / top_ratio
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16" font-size="13">SMC-D under ism-run against TCP '
           f'(median ratio; latency as TCP/SMC-D: higher is better)</text>',
           f'<line x1="{left}" y1="{y(1)}" x2="{w - 10}" y2="{y(1)}" stroke="#999" '
           f'stroke-dasharray="4 3"/>',
           f'<text x="{left - 6}" y="{y(1) + 4}" text-anchor="end">1×</text>']
    for gi, tool in enumerate(tools):
        x0 = left + gi * group
        for ti, t in enumerate(transports):
            r = next((r for tt, tr, r in ratios if tt == tool and tr == t), None)
            if r is None:
                continue
            x = x0 + (ti + 0.5) * bar
            out.append(f'<rect x="{x:.1f}" y="{y(r):.1f}" width="{bar * 0.9:.1f}" '
                       f'height="{y(0) - y(r):.1f}" fill="{colors[t]}"/>')
            out.append(f'<text x="{x + bar * 0.45:.1f}" y="{y(r) - 3:.1f}" '
                       f'text-anchor="middle">{r:.2f}</text>')
        seed = SEED[tool]["rfc"]
        if seed is not None:
            s = seed if TOOLS[tool][1] else 1 / seed
            out.append(f'<line x1="{x0 + 0.3 * bar:.1f}" y1="{y(s):.1f}" '
                       f'x2="{x0 + (len(transports) + 0.7) * bar:.1f}" y2="{y(s):.1f}" '
                       f'stroke="#e15759" stroke-width="2"/>')
        out.append(f'<text x="{x0 + group / 2:.1f}" y="{h - bottom + 16}" '
                   f'text-anchor="middle">{tool}</text>')
    ly = h - 20
    for i, t in enumerate(transports):
        out.append(f'<rect x="{left + i * 130}" y="{ly - 9}" width="10" height="10" '
                   f'fill="{colors[t]}"/><text x="{left + i * 130 + 14}" y="{ly}">{t}</text>')
    out.append(f'<line x1="{left + len(transports) * 130}" y1="{ly - 4}" '
               f'x2="{left + len(transports) * 130 + 16}" y2="{ly - 4}" stroke="#e15759" '
               f'stroke-width="2"/><text x="{left + len(transports) * 130 + 20}" y="{ly}">'
               f'loopback-ism RFC (Linux)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--secs", type=int, default=3, help="seconds per measurement (default 3)")
    p.add_argument("--only", default=",".join(TOOLS),
                   help="figures to run, comma-separated: " + ", ".join(TOOLS))
    p.add_argument("--transports", default=",".join(TRANSPORTS),
                   help="transports, comma-separated: " + ", ".join(TRANSPORTS))
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes")
    p.add_argument("--sendfile", action="store_true", help="nginx with sendfile on")
    p.add_argument("--pin", action="store_true",
                   help="pin servers to core 0 and clients to core 1 (taskset)")
    p.add_argument("--out", default="seed-bench",
                   help="output prefix: PREFIX.json and PREFIX.svg (default seed-bench)")
    args = p.parse_args()

    tools = [t for t in args.only.split(",") if t]
    transports = [t for t in args.transports.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            p.error(f"unknown figure {t!r} (one of {', '.join(TOOLS)})")
    for t in transports:
        if t not in TRANSPORTS:
            p.error(f"unknown transport {t!r} (one of {', '.join(TRANSPORTS)})")
    if args.rounds < 1 or args.secs < 1 or args.nginx_workers < 1:
        p.error("--rounds, --secs and --nginx-workers must be at least 1")
    needed = {"sockperf-bw": "sockperf", "sockperf-lat": "sockperf", "msg-rate": "sockperf",
              "iperf3": "iperf3", "nginx-wrk": "nginx"}
    missing = sorted({needed[t] for t in tools if shutil.which(needed[t]) is None}
                     | ({"wrk"} if "nginx-wrk" in tools and not shutil.which("wrk") else set()))
    if missing:
        sys.exit(f"seed-bench: missing programs: {' '.join(missing)} "
                 "(apt-get install sockperf iperf3 nginx-light wrk)")

    b = Bench(args)
    if not os.access(b.ism_sim, os.X_OK):
        sys.exit(f"seed-bench: {b.ism_sim} missing (cargo build --release -p ism-sim -p ism-run)")
    cells = {f"{tool}/{t}": {"samples": [], "failures": []} for tool in tools for t in transports}
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        for r in range(args.rounds):
            for tool in tools:
                order = transports[r % len(transports):] + transports[:r % len(transports)]
                for t in order:
                    key = f"{tool}/{t}"
                    try:
                        v = b.measure(tool, t)
                        cells[key]["samples"].append(v)
                        print(f"round {r + 1}/{args.rounds} {key}: {fmt(v)} {TOOLS[tool][0]}",
                              flush=True)
                    except (CellFailed, subprocess.TimeoutExpired) as e:
                        cells[key]["failures"].append(str(e)[-2000:])
                        print(f"round {r + 1}/{args.rounds} {key}: FAILED: "
                              f"{str(e).splitlines()[0]}", flush=True)
    finally:
        for proc in list(b.procs):
            b.stop(proc, signal.SIGKILL)
        b.stop_boards()
        shutil.rmtree(b.dir, ignore_errors=True)
    for c in cells.values():
        if c["samples"]:
            c["summary"] = summary(c["samples"])
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                 if l.startswith("model name")), "unknown")},
        "options": {"rounds": args.rounds, "secs": args.secs, "pin": args.pin,
                    "nginx_workers": args.nginx_workers, "sendfile": args.sendfile},
        "tools": tools,
        "transports": transports,
        "units": {t: TOOLS[t][0] for t in tools},
        "seed": {t: SEED[t] for t in tools},
        "targets": {t: TARGETS[t] for t in tools},
        "cells": cells,
    }
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(args.out + ".svg", "w") as f:
        f.write(svg(result))
    print()
    print(table(result))
    print(f"\n{args.out}.json, {args.out}.svg written")
    failed = sum(len(c["failures"]) for c in cells.values())
    if failed:
        print(f"{failed} measurement(s) failed; their output is in {args.out}.json")
        sys.exit(1)


if __name__ == "__main__":
    main()
