#!/usr/bin/env python3
"""A Worker on workerd doing hot env.KV.get() under load, with edgekv behind its
KV binding vs workerd's own bundled KV backend (/workerd/kv.js, experimental,
SQLite in a Durable Object) behind it: side by side, alternating, in one run.

    benches/workerd.py EDGEKV_BIN [SECONDS] [ROUNDS]

wrk (one thread, 16 connections) loads the Worker; each row gives requests/s,
latency percentiles, and the CPU each process used per second of the run
(workerd's, and the edge's for edgekv), read from /proc. Prints a Markdown table
for benches/RESULTS.md. Run by `make bench-workerd`.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

WORKER = r"""
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/put") {
      const n = Number(url.searchParams.get("n") ?? "0");
      for (let i = 0; i < n; i++) await env.KV.put(`k${i}`, `value-${i}`);
      return new Response(`put ${n}\n`);
    }
    const value = await env.KV.get(url.searchParams.get("k") ?? "");
    return value === null ? new Response("no such key\n", { status: 404 }) : new Response(value);
  },
};
"""

EDGEKV_CONFIG = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = (modules = [(name = "bench.js", esModule = embed "bench.js")],
      compatibilityDate = "2025-09-01", bindings = [(name = "KV", kvNamespace = "edgekv")])),
    (name = "edgekv", external = (address = "{binding}", http = (injectRequestHeaders = [
      (name = "Authorization", value = "Bearer {token}"),
      (name = "edgekv-namespace", value = "{namespace}")]))),
  ],
  sockets = [(name = "http", address = "{listen}", http = (), service = "main")],
);
"""

BUNDLED_CONFIG = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = (modules = [(name = "bench.js", esModule = embed "bench.js")],
      compatibilityDate = "2025-09-01",
      bindings = [(name = "KV", kvNamespace = (name = "kv", props = (json = "{{\\"namespace\\": \\"bench\\"}}")))])),
    (name = "kv", worker = (modules = [(name = "kv.js", bundled = "/workerd/kv.js")],
      compatibilityDate = "2025-09-01",
      durableObjectNamespaces = [(className = "KVNamespace", uniqueKey = "edgekv-bench-kv", enableSql = true)],
      durableObjectStorage = (localDisk = "kv-do-disk"),
      bindings = [(name = "SHARD", durableObjectNamespace = "KVNamespace"), (name = "BLOBS", service = "kv-blobs")])),
    (name = "kv-do-disk", disk = (path = "{data}/do", writable = true)),
    (name = "kv-blobs", disk = (path = "{data}/blobs", writable = true)),
  ],
  sockets = [(name = "http", address = "{listen}", http = (), service = "main")],
);
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(port, what, proc):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def get(port, path):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return r.status, r.read().decode()


def wrk(port, seconds, pids):
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.time()
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/get?k=k5"],
        check=True, capture_output=True, text=True,
    ).stdout
    elapsed = time.time() - started
    cpu = {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"wrk saw {errors.group(1)} failed answers:\n{out}")
    return rps, lat, cpu


def main():
    bin_path = sys.argv[1]
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    node_dir = os.environ.get("EDGEKV_NODE_DIR", os.path.expanduser("~/.cache/edgekv-node"))
    workerd = os.path.join(node_dir, "node_modules/.bin/workerd")
    if not os.path.exists(workerd):
        sys.exit(f"no workerd at {workerd}: run ./scripts/node-deps.sh")
    if not shutil.which("wrk"):
        sys.exit("no wrk: run ./benches/need.sh wrk")
    work = tempfile.mkdtemp(prefix="edgekv-bench-workerd-")
    procs = []
    try:
        # edgekv dev with its binding listener.
        binding = free_port()
        dev = subprocess.Popen(
            [bin_path, "dev", "--data-dir", f"{work}/edgekv", "--http", "127.0.0.1:0",
             "--admin", "127.0.0.1:0", "--control-listen", "127.0.0.1:0",
             "--dashboard", "127.0.0.1:0", "--binding", f"127.0.0.1:{binding}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("EDGEKV_")},
        )
        procs.append(dev)
        token = namespace = None
        for line in dev.stdout:
            line = line.strip()
            if line.startswith("token:"):
                token = line.split()[1]
            m = re.match(r"binding: http://\S+ \(namespace ([0-9a-f]{32})", line)
            if m:
                namespace = m.group(1)
                break
        if not (token and namespace):
            sys.exit("edgekv dev printed no binding line")

        setups = {}
        for name, template, extra in [
            ("edgekv (--binding)", EDGEKV_CONFIG, []),
            ("workerd's bundled KV (kv.js, SQLite)", BUNDLED_CONFIG, ["--experimental"]),
        ]:
            d = os.path.join(work, "bundled" if extra else "edgekv-worker")
            os.makedirs(f"{d}/data/do", exist_ok=True)
            os.makedirs(f"{d}/data/blobs", exist_ok=True)
            with open(f"{d}/bench.js", "w") as f:
                f.write(WORKER)
            port = free_port()
            with open(f"{d}/bench.capnp", "w") as f:
                f.write(template.format(binding=f"127.0.0.1:{binding}", token=token,
                                        namespace=namespace, listen=f"127.0.0.1:{port}",
                                        data=f"{d}/data"))
            proc = subprocess.Popen([workerd, "serve", *extra, f"{d}/bench.capnp"], cwd=d,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            wait_for(port, name, proc)
            status, body = get(port, "/put?n=100")
            assert status == 200, body
            status, body = get(port, "/get?k=k5")
            assert (status, body) == (200, "value-5"), (status, body)
            pids = {"workerd": proc.pid}
            if not extra:
                pids["edge"] = dev.pid
            setups[name] = (port, pids)
            # Warm up (JIT, the edge's hot tier).
            subprocess.run(["wrk", "-t1", "-c16", "-d2s", f"http://127.0.0.1:{port}/get?k=k5"],
                           check=True, capture_output=True)

        rows = []
        for r in range(rounds):
            for name, (port, pids) in setups.items():
                rps, lat, cpu = wrk(port, seconds, pids)
                rows.append((r + 1, name, rps, lat, cpu))
                print(f"round {r + 1}: {name}: {rps:.0f} req/s, p50 {lat.get('50')}, "
                      f"p99 {lat.get('99')}, cpu {json.dumps({k: round(v, 2) for k, v in cpu.items()})}",
                      file=sys.stderr)
        print(f"| round | backend behind the binding | requests/s | p50 | p90 | p99 | workerd CPU | edge CPU |")
        print("|---|---|---|---|---|---|---|---|")
        for r, name, rps, lat, cpu in rows:
            edge = f"{cpu['edge']:.2f}" if "edge" in cpu else "–"
            print(f"| {r} | {name} | {rps:,.0f} | {lat.get('50')} | {lat.get('90')} | {lat.get('99')} "
                  f"| {cpu['workerd']:.2f} | {edge} |")
        by = {}
        for _, name, rps, _, _ in rows:
            by.setdefault(name, []).append(rps)
        names = list(setups)
        ratio = (sum(by[names[0]]) / len(by[names[0]])) / (sum(by[names[1]]) / len(by[names[1]]))
        print(f"\nedgekv ÷ bundled (mean requests/s): {ratio:.2f}×")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
