#!/usr/bin/env python3
"""The soak campaign's driver (run it through scripts/soak.sh).

Starts a replicated cache pair, an L4 balancer over it (and over the L7 listener), HTTP
backends and an L7 balancer over them, all on 127.0.0.1, as real processes of the release
binary; drives steady, bounded mixed load for a set duration while a seeded random schedule
kills and restarts cache nodes and backends, drains and readies balanced servers and reloads
the balancers; then checks that every client-visible error fell inside a failover window,
that RSS stayed flat and no descriptor leaked, and that the pair converged.

Python 3 standard library only. `python3 soak.py backend PORT NAME` is one HTTP backend.
"""

import argparse
import csv
import hashlib
import http.client
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

TOKEN = "soak-admin-token-0123456789"
GRACE = 2.0  # seconds added to every observed recovery before a window closes
SAMPLE_EVERY = 5.0  # seconds between RSS / fd samples
STEADY_WAIT = 60.0  # longest wait for the system to be healthy again after a fault
KEYS_PER_WORKER = 400


# --------------------------------------------------------------------------- backend


def run_backend(port, name):
    """One HTTP/1.1 backend: GET answers its name and path, POST its name and a digest of
    the body; idle keep-alive connections are closed after 5 s."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5

        def log_message(self, *args):
            pass

        def reply(self, body):
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.reply("ok\n")
            else:
                self.reply(f"{name} {self.path}\n")

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            self.reply(f"{name} {len(body)} {hashlib.sha1(body).hexdigest()}\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


# --------------------------------------------------------------------------- helpers


def now():
    return time.time()


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def proc_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


class Proc:
    """A child process the campaign owns: started in its own session (so a Ctrl-C reaches
    only the driver, which then stops them), its pid recorded in the pid file that
    soak.sh's trap reads."""

    def __init__(self, name, argv, workdir, opsconsole=True):
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.opsconsole = opsconsole
        self.popen = None
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self.starts = 0

    def start(self):
        self.starts += 1
        err = open(self.stderr_path, "a")
        err.write(f"----- start {self.starts} at {now():.3f}\n")
        err.flush()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
            cwd=self.workdir,
        )
        err.close()
        with open(os.path.join(self.workdir, "pids"), "a") as f:
            f.write(f"{self.popen.pid} {self.name}\n")
        return self

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def kill9(self):
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def hup(self):
        self.popen.send_signal(signal.SIGHUP)

    def stop(self):
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=8)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def log_text(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


# --------------------------------------------------------------------------- memcached


class ProtoError(Exception):
    pass


class MC:
    """A minimal blocking memcached text-protocol client."""

    def __init__(self, addr, timeout=3.0):
        self.addr = addr
        self.timeout = timeout
        self.sock = None
        self.buf = b""

    def connect(self):
        self.close()
        self.sock = socket.create_connection(self.addr, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ProtoError("connection closed by the server")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def set(self, key, value):
        if self.sock is None:
            self.connect()
        self.sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        line = self._line()
        if line != b"STORED":
            raise ProtoError(f"set {key}: {line[:200]!r}")

    def get_many(self, keys):
        if self.sock is None:
            self.connect()
        self.sock.sendall(b"get " + " ".join(keys).encode() + b"\r\n")
        found = {}
        while True:
            line = self._line()
            if line == b"END":
                return found
            parts = line.split()
            if len(parts) >= 4 and parts[0] == b"VALUE":
                found[parts[1].decode()] = self._exact(int(parts[3]))
            else:
                raise ProtoError(f"get: {line[:200]!r}")

    def stats(self, sub=""):
        if self.sock is None:
            self.connect()
        self.sock.sendall(f"stats {sub}\r\n".encode())
        out = {}
        while True:
            line = self._line()
            if line == b"END":
                return out
            parts = line.decode(errors="replace").split(" ", 2)
            if parts[0] != "STAT" or len(parts) < 3:
                raise ProtoError(f"stats: {line[:200]!r}")
            out[parts[1]] = parts[2]


def mc_stats(addr, sub=""):
    c = MC(addr, timeout=1.0)
    try:
        return c.stats(sub)
    except (OSError, ProtoError):
        return None
    finally:
        c.close()


def value_for(key, seq):
    """The value written as `seq` of `key`: self-describing, so a read can be checked."""
    n = 16 + (int(hashlib.md5(f"{key}/{seq}".encode()).hexdigest()[:4], 16) % 1500)
    pad = hashlib.sha1(f"{key}/{seq}".encode()).hexdigest().encode()
    head = f"{key}|{seq}|".encode()
    body = (pad * (n // len(pad) + 1))[:n]
    return head + body


def parse_value(key, value):
    """The seq a stored value claims, or None when it is not one this campaign wrote."""
    try:
        k, seq, _ = value.split(b"|", 2)
        seq = int(seq)
    except ValueError:
        return None
    if k.decode(errors="replace") != key or value != value_for(key, seq):
        return None
    return seq


# --------------------------------------------------------------------------- load


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = []  # dicts: t0, t1, scope, worker, kind, detail

    def add(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def error(self, t0, scope, worker, kind, detail):
        with self.lock:
            self.errors.append(
                {
                    "t0": t0,
                    "t1": now(),
                    "scope": scope,
                    "worker": worker,
                    "kind": kind,
                    "detail": str(detail)[:300],
                }
            )


class Pacer:
    def __init__(self, rate, stop, deadline):
        self.interval = 1.0 / rate
        self.next = now()
        self.stop = stop
        self.deadline = deadline

    def wait(self):
        """False when the worker should end."""
        self.next += self.interval
        delay = self.next - now()
        if delay < -1.0:
            self.next = now()  # far behind: do not burst to catch up
        elif delay > 0:
            if self.stop.wait(delay):
                return False
        return not self.stop.is_set() and now() < self.deadline


class LoadWorker(threading.Thread):
    """A paced client of one address, counting into `stats` under its scope."""

    def __init__(self, name, scope, addr, rate, stats, stop, deadline, rng):
        super().__init__(name=name, daemon=True)
        self.scope = scope
        self.addr = addr
        self.rate = rate
        self.stats = stats
        self.stop = stop
        self.deadline = deadline
        self.rng = rng


class CacheWorker(LoadWorker):
    """Sets and gets over its own keys; every value read must be one written."""

    def __init__(self, name, scope, addr, rate, stats, stop, deadline, rng, reconnect_every):
        super().__init__(name, scope, addr, rate, stats, stop, deadline, rng)
        self.reconnect_every = reconnect_every
        self.keys = [f"{name}:{i}" for i in range(KEYS_PER_WORKER)]
        self.sent = {}  # key -> highest seq sent (it may have been stored even if the reply was lost)
        self.acked = {}  # key -> highest seq answered STORED
        self.seq = 0

    def run(self):
        c = MC(self.addr)
        pacer = Pacer(self.rate, self.stop, self.deadline)
        ops = 0
        while pacer.wait():
            if self.reconnect_every and ops and ops % self.reconnect_every == 0:
                c.close()
            ops += 1
            t0 = now()
            try:
                if self.rng.random() < 0.4:
                    key = self.rng.choice(self.keys)
                    self.seq += 1
                    self.sent[key] = self.seq
                    c.set(key, value_for(key, self.seq))
                    self.acked[key] = self.seq
                    self.stats.add(f"cache {self.scope} set ok")
                else:
                    keys = self.rng.sample(self.keys, self.rng.choice((1, 1, 1, 4, 10)))
                    found = c.get_many(keys)
                    for key in keys:
                        self.check(key, found.get(key), t0)
                    self.stats.add(f"cache {self.scope} get requests (multi-key gets count once)")
            except (OSError, ProtoError) as e:
                kind = "timeout" if isinstance(e, socket.timeout) else type(e).__name__
                self.stats.error(t0, self.scope, self.name, kind, e)
                self.stats.add(f"cache {self.scope} errors")
                c.close()
                self.stop.wait(0.1)
        c.close()

    def check(self, key, value, t0):
        if value is None:
            if key in self.acked:
                self.stats.add(f"cache {self.scope} get key miss (key was written)")
                with self.stats.lock:
                    self.stats.counts.setdefault("_lost", []).append((t0, self.scope))
            else:
                self.stats.add(f"cache {self.scope} get key miss (never written)")
            return
        seq = parse_value(key, value)
        if seq is None or seq > self.sent.get(key, 0):
            self.stats.error(t0, self.scope, self.name, "bad value", f"{key}: {value[:60]!r}")
            self.stats.add(f"cache {self.scope} errors")
        elif seq < self.acked.get(key, 0):
            self.stats.add(f"cache {self.scope} get key hit (older value)")
            with self.stats.lock:
                self.stats.counts.setdefault("_stale", []).append((t0, self.scope))
        else:
            self.stats.add(f"cache {self.scope} get key hit")


class HttpWorker(LoadWorker):
    """GETs and some POSTs; every answer must be a 200 with the body its backend makes."""

    def __init__(self, name, scope, addr, rate, keepalive, stats, stop, deadline, rng, backends):
        super().__init__(name, scope, addr, rate, stats, stop, deadline, rng)
        self.keepalive = keepalive
        self.backends = set(backends)

    def run(self):
        conn = None
        pacer = Pacer(self.rate, self.stop, self.deadline)
        n = 0
        while pacer.wait():
            n += 1
            t0 = now()
            post = self.rng.random() < 0.2
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(*self.addr, timeout=5)
                headers = {} if self.keepalive else {"Connection": "close"}
                if post:
                    body = self.rng.randbytes(self.rng.randint(100, 4000))
                    conn.request("POST", f"/api/submit/{n}", body=body, headers=headers)
                else:
                    path = f"/page/{self.rng.randint(1, 1000)}"
                    conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise ProtoError(f"status {resp.status}: {data[:100]!r}")
                words = data.decode(errors="replace").split()
                if not words or words[0] not in self.backends:
                    raise ProtoError(f"unexpected body {data[:100]!r}")
                if post:
                    want = [str(len(body)), hashlib.sha1(body).hexdigest()]
                else:
                    want = [path]
                if words[1:] != want:
                    raise ProtoError(f"wrong body {data[:100]!r}")
                self.stats.add(f"http {self.scope} {'POST' if post else 'GET'} ok")
                if not self.keepalive:
                    conn.close()
                    conn = None
            except (OSError, ProtoError, http.client.HTTPException) as e:
                kind = "timeout" if isinstance(e, socket.timeout) else type(e).__name__
                self.stats.error(t0, self.scope, self.name, kind, f"{'POST' if post else 'GET'}: {e}")
                self.stats.add(f"http {self.scope} errors")
                if conn is not None:
                    conn.close()
                conn = None
                self.stop.wait(0.1)
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------- sampler


class Sampler(threading.Thread):
    def __init__(self, procs, path, stop):
        super().__init__(name="sampler", daemon=True)
        self.procs = procs
        self.stop = stop
        self.lock = threading.Lock()
        self.rows = []  # (t, name, pid, rss_kb, fds, phase)
        self.phase = "start"
        self.file = open(path, "w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(["unix_time", "process", "pid", "rss_kb", "fds", "phase"])

    def sample(self):
        t = now()
        with self.lock:
            for p in self.procs:
                if not p.alive():
                    continue
                rss, fds = proc_rss_kb(p.pid), proc_fds(p.pid)
                if rss is None or fds is None:
                    continue
                row = (round(t, 3), p.name, p.pid, rss, fds, self.phase)
                self.rows.append(row)
                self.csv.writerow(row)
            self.file.flush()

    def run(self):
        while not self.stop.wait(SAMPLE_EVERY):
            self.sample()

    def close(self):
        with self.lock:
            self.file.close()


# --------------------------------------------------------------------------- campaign


class Campaign:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin
        self.dir = args.dir
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.windows = []  # dicts: kind, detail, start, end, scopes
        self.faults = {}
        self.failures = []
        self.procs = []
        self.stop_load = threading.Event()
        self.stop_sampler = threading.Event()
        self.token_file = os.path.join(self.dir, "admin.token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(self.token_file, 0o600)
        self.l4_variant = 0
        self.l7_variant = 0

    # ----- setup

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def setup(self):
        p = free_ports(16)
        self.port = {
            "a": p[0], "a_repl": p[1], "a_admin": p[2],
            "b": p[3], "b_repl": p[4], "b_admin": p[5],
            "l4_cache": p[6], "l4_web": p[7], "l4_admin": p[8],
            "l7": p[9], "l7_admin": p[10],
            "app1": p[11], "app2": p[12], "app3": p[13],
        }
        self.addr = {k: ("127.0.0.1", v) for k, v in self.port.items()}
        logdir = os.path.join(self.dir, "log")
        repl = (
            "heartbeat_interval_ms = 200\nheartbeat_timeout_ms = 1000\nreconnect_max_ms = 500\n"
            'ack = "async"\nbacklog_mb = 4\n'
        )
        for node, role, peer in (("a", "master", "b"), ("b", "slave", "a")):
            self.write(
                f"{node}.toml",
                f'[log]\ndir = "{logdir}"\nfile = "{node}.log"\nrotation = "never"\n\n'
                f'[{role}]\nlisten = "127.0.0.1"\nport = {self.port[node]}\nmemory_limit_mb = 64\n\n'
                f"[{role}.replication]\nlisten = \"127.0.0.1:{self.port[node + '_repl']}\"\n"
                f"peer = \"127.0.0.1:{self.port[peer + '_repl']}\"\n{repl}\n"
                f"[admin]\nlisten = \"127.0.0.1:{self.port[node + '_admin']}\"\n"
                f'token_file = "{self.token_file}"\n',
            )
        self.write_l4()
        self.write_l7()
        self.a = Proc("cache-a", [self.bin, "--headless", "--config", os.path.join(self.dir, "a.toml")], self.dir)
        self.b = Proc("cache-b", [self.bin, "--headless", "--config", os.path.join(self.dir, "b.toml")], self.dir)
        self.l4 = Proc("l4", [self.bin, "--headless", "--role", "l4", "--config", os.path.join(self.dir, "l4.toml")], self.dir)
        self.l7 = Proc("l7", [self.bin, "--headless", "--role", "l7", "--config", os.path.join(self.dir, "l7.toml")], self.dir)
        me = os.path.abspath(__file__)
        self.apps = {
            n: Proc(n, [sys.executable, me, "backend", str(self.port[n]), n, self.dir], self.dir, opsconsole=False)
            for n in ("app1", "app2", "app3")
        }
        self.nodes = {"a": self.a, "b": self.b}
        self.procs = [self.a, self.b, self.l4, self.l7] + list(self.apps.values())
        self.sampler = Sampler([self.a, self.b, self.l4, self.l7], os.path.join(self.dir, "resources.csv"), self.stop_sampler)

    def write_l4(self):
        # variant toggles a check interval and the slave's weight, so a reload changes something
        interval = 300 + 100 * (self.l4_variant % 2)
        aweight = 1 + (self.l4_variant // 2) % 2
        self.write(
            "l4.toml",
            f'[log]\ndir = "{os.path.join(self.dir, "log")}"\nfile = "l4.log"\nrotation = "never"\n\n'
            "[l4]\nthreads = 2\n\n"
            f'[l4.services.cache]\nlisten = "127.0.0.1:{self.port["l4_cache"]}"\nscheduler = "fo"\n'
            "retries = 1\nconnect_timeout_ms = 500\nservers = [\n"
            f'  {{ name = "a", address = "127.0.0.1:{self.port["a"]}", weight = {aweight} }},\n'
            f'  {{ name = "b", address = "127.0.0.1:{self.port["b"]}", weight = 100 }},\n]\n'
            f'[l4.services.cache.check]\ntype = "memcached"\ninterval_ms = {interval}\n'
            "timeout_ms = 250\nrise = 2\nfall = 2\n\n"
            f'[l4.services.web]\nlisten = "127.0.0.1:{self.port["l4_web"]}"\nscheduler = "wlc"\n'
            "retries = 1\nconnect_timeout_ms = 500\nservers = [\n"
            f'  {{ name = "l7", address = "127.0.0.1:{self.port["l7"]}" }},\n]\n'
            '[l4.services.web.check]\ntype = "tcp"\ninterval_ms = 1000\ntimeout_ms = 500\n\n'
            f'[admin]\nlisten = "127.0.0.1:{self.port["l4_admin"]}"\ntoken_file = "{self.token_file}"\n',
        )

    def write_l7(self):
        interval = 500 + 100 * (self.l7_variant % 2)
        w3 = 1 + (self.l7_variant // 2) % 2
        servers = "".join(
            f'  {{ name = "{n}", address = "127.0.0.1:{self.port[n]}", weight = {w3 if n == "app3" else 1} }},\n'
            for n in ("app1", "app2", "app3")
        )
        check = (
            f'type = "http"\npath = "/health"\nexpect_status = "200"\ninterval_ms = {interval}\n'
            "timeout_ms = 300\nrise = 2\nfall = 2\n"
        )
        self.write(
            "l7.toml",
            f'[log]\ndir = "{os.path.join(self.dir, "log")}"\nfile = "l7.log"\nrotation = "never"\n\n'
            "[l7]\nthreads = 2\n\n"
            f'[l7.listeners.main]\nlisten = "127.0.0.1:{self.port["l7"]}"\nidle_timeout_secs = 30\n'
            'request_id_header = "X-Request-Id"\nroutes = [\n'
            '  { path = "/api/", pool = "api" },\n  { path = "/", pool = "web" },\n]\n\n'
            '[l7.pools.web]\nalgorithm = "roundrobin"\nretries = 2\nconnect_timeout_ms = 500\n'
            "response_timeout_ms = 5000\npassive = { consecutive_errors = 5, eject_ms = 2000, eject_max_ms = 10000 }\n"
            f"servers = [\n{servers}]\n[l7.pools.web.check]\n{check}\n"
            '[l7.pools.api]\nalgorithm = "leastconn"\nretries = 2\nconnect_timeout_ms = 500\n'
            f"response_timeout_ms = 5000\nservers = [\n{servers}]\n[l7.pools.api.check]\n{check}\n"
            f'[admin]\nlisten = "127.0.0.1:{self.port["l7_admin"]}"\ntoken_file = "{self.token_file}"\n',
        )

    # ----- observation

    def snapshot(self, admin_port):
        req = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/api/v1/snapshot",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def ctl(self, admin_port, *words):
        out = subprocess.run(
            [self.bin, "ctl", "--admin", f"http://127.0.0.1:{admin_port}", "--token-file", self.token_file, "--timeout", "5", *words],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            self.failures.append(f"ctl {' '.join(words)} exited {out.returncode}: {out.stderr.strip()}")
        return out

    @staticmethod
    def up(server):
        h = server["health"]
        state = h.get("state") if isinstance(h, dict) else h
        return state in ("up", "going_down")

    def l4_servers(self):
        s = self.snapshot(self.port["l4_admin"])
        if not s or not s.get("l4"):
            return None
        return {(svc["name"], srv["name"]): srv for svc in s["l4"] for srv in svc["servers"]}

    def l7_servers(self):
        s = self.snapshot(self.port["l7_admin"])
        if not s or not s.get("l7"):
            return None
        return {(pool["name"], srv["name"]): srv for pool in s["l7"]["pools"] for srv in pool["servers"]}

    def node_state(self, n):
        st = mc_stats(self.addr[n])
        if st is None:
            return None
        return st

    def pair_streaming(self):
        sa, sb = self.node_state("a"), self.node_state("b")
        if not sa or not sb:
            return False
        roles = {sa.get("replication"), sb.get("replication")}
        return (
            roles == {"MASTER", "SLAVE"}
            and all(s.get("repl_link") == "streaming" and s.get("repl_serving") == "yes" for s in (sa, sb))
        )

    def steady(self):
        if not self.pair_streaming():
            return False
        l4 = self.l4_servers()
        l7 = self.l7_servers()
        if not l4 or not l7:
            return False
        for srv in list(l4.values()) + list(l7.values()):
            if not self.up(srv) or srv["admin"] != "ready" or srv.get("ejected_for_ms"):
                return False
        return all(p.alive() for p in self.procs)

    def wait_for(self, what, cond, limit=STEADY_WAIT, every=0.05):
        deadline = now() + limit
        while now() < deadline:
            if cond():
                return now()
            time.sleep(every)
        self.failures.append(f"{what}: not within {limit:.0f} s")
        log(f"FAILURE: {what}: not within {limit:.0f} s")
        return None

    def window(self, kind, detail, start, end, scopes, phase=None):
        end = (end if end is not None else now()) + GRACE
        self.windows.append(
            {"kind": kind, "phase": phase or detail, "detail": detail, "start": start, "end": end, "scopes": sorted(scopes)}
        )
        log(f"  window {kind} {detail}: {end - start - GRACE:.2f} s observed + {GRACE:.0f} s grace, scopes {','.join(sorted(scopes))}")

    def count_fault(self, kind):
        self.faults[kind] = self.faults.get(kind, 0) + 1

    # ----- faults

    def fault_switchover(self):
        """A planned handover: the master (whichever node it is) hands its role to the slave."""
        roles = {n: (self.node_state(n) or {}).get("replication") for n in ("a", "b")}
        master = next((n for n, r in roles.items() if r == "MASTER"), None)
        if master is None:
            self.failures.append(f"switchover: no master ({roles})")
            return
        other = "b" if master == "a" else "a"
        kind = "switchover"
        self.count_fault(kind)
        log(f"fault: switchover from node {master} to node {other}")
        t0 = now()
        role = "master" if master == "a" else "slave"  # the cache role named in its config
        self.ctl(self.port[f"{master}_admin"], "switchover", "--role", role)
        t_done = self.wait_for(
            f"switchover: node {other} MASTER with node {master} streaming as its slave",
            lambda: (self.node_state(other) or {}).get("replication") == "MASTER" and self.pair_streaming(),
        )
        self.window(kind, f"node {master} -> node {other}", t0, t_done, {"l4-cache", "direct-a", "direct-b"}, "handover")
        self.wait_for("steady after the switchover", self.steady, every=0.2)

    def fault_kill_cache(self, want_role):
        # Node b is the one killed, in both roles (a switchover first when it has the other
        # one), so node a runs the whole campaign and its RSS says whether memory stays flat.
        # The L4 service prefers b (weight 100), so every kill moves the balancer's clients.
        victim, other = "b", "a"
        if (self.node_state(victim) or {}).get("replication") != want_role:
            self.fault_switchover()
            if (self.node_state(victim) or {}).get("replication") != want_role:
                return
        kind = f"kill -9 cache {want_role.lower()}"
        self.count_fault(kind)
        log(f"fault: {kind}, pid {self.nodes[victim].pid}")
        t0 = now()
        self.nodes[victim].kill9()
        t_fail = self.wait_for(
            f"{kind}: node {other} MASTER and the L4 check taking {victim} out",
            lambda: (self.node_state(other) or {}).get("replication") == "MASTER"
            and not self.up((self.l4_servers() or {}).get(("cache", victim), {"health": "Up"})),
        )
        self.window(kind, f"node {victim} down", t0, t_fail, {"l4-cache", f"direct-{victim}"}, "survivor master, L4 check out")
        time.sleep(self.rng.uniform(2, 8))
        t1 = now()
        self.nodes[victim].start()
        t_ok = self.wait_for(
            f"{kind}: node {victim} restarted, rejoined as slave and back in L4",
            lambda: self.pair_streaming()
            and (self.node_state(victim) or {}).get("replication") == "SLAVE"
            and self.up((self.l4_servers() or {}).get(("cache", victim), {"health": "Down"})),
        )
        self.window(kind, f"node {victim} out until it serves again", t0, t_ok, {f"direct-{victim}"}, "kill to serving again (its own clients)")
        self.window(kind, f"node {victim} restart and rejoin", t1, t_ok, {"l4-cache", f"direct-{victim}"}, "restart to rejoined, copied, L4 up")

    def fault_kill_backend(self):
        name = self.rng.choice(sorted(self.apps))
        kind = "kill -9 http backend"
        self.count_fault(kind)
        log(f"fault: {kind} {name} (pid {self.apps[name].pid})")
        t0 = now()
        self.apps[name].kill9()
        t_down = self.wait_for(
            f"{kind}: L7 taking {name} out",
            lambda: all(not self.up(srv) for (pool, n), srv in (self.l7_servers() or {}).items() if n == name)
            and bool(self.l7_servers()),
        )
        self.window(kind, f"{name} down", t0, t_down, {"http-l7", "http-l4"}, "kill to L7 check out")
        time.sleep(self.rng.uniform(2, 8))
        t1 = now()
        self.apps[name].start()
        t_up = self.wait_for(
            f"{kind}: {name} back up in L7",
            lambda: all(self.up(srv) for (pool, n), srv in (self.l7_servers() or {}).items() if n == name)
            and bool(self.l7_servers()),
        )
        self.window(kind, f"{name} restart", t1, t_up, {"http-l7", "http-l4"}, "restart to L7 check up")

    def fault_drain(self, where):
        if where == "l4":
            pool, server = "cache", self.rng.choice(["a", "b"])
            admin, scopes = self.port["l4_admin"], {"l4-cache"}
            servers = self.l4_servers
        else:
            pool, server = self.rng.choice(["web", "api"]), self.rng.choice(sorted(self.apps))
            admin, scopes = self.port["l7_admin"], {"http-l7", "http-l4"}
            servers = self.l7_servers
        kind = f"drain/ready {where} server"
        self.count_fault(kind)
        log(f"fault: {kind} {pool}/{server}")
        t0 = now()
        self.ctl(admin, "drain", f"{pool}/{server}")
        t_done = self.wait_for(
            f"{kind}: {pool}/{server} draining",
            lambda: (servers() or {}).get((pool, server), {}).get("admin") == "drain",
        )
        self.window(kind, f"drain {pool}/{server}", t0, t_done, scopes, "drain")
        time.sleep(self.rng.uniform(3, 10))
        t1 = now()
        self.ctl(admin, "ready", f"{pool}/{server}")
        t_done = self.wait_for(
            f"{kind}: {pool}/{server} ready",
            lambda: (servers() or {}).get((pool, server), {}).get("admin") == "ready",
        )
        self.window(kind, f"ready {pool}/{server}", t1, t_done, scopes, "ready")

    def fault_reload(self, which):
        proc = self.l4 if which == "l4" else self.l7
        changed = self.rng.random() < 0.5
        if changed:
            if which == "l4":
                self.l4_variant += 1
                self.write_l4()
            else:
                self.l7_variant += 1
                self.write_l7()
        via_ctl = self.rng.random() < 0.25
        kind = f"reload {which} ({'changed' if changed else 'unchanged'} config)"
        self.count_fault(kind)
        log(f"fault: {kind} via {'ctl reload' if via_ctl else 'SIGHUP'}")
        scopes = {"l4-cache", "http-l4"} if which == "l4" else {"http-l7", "http-l4"}
        before = proc.log_text().count("SIGHUP:")
        t0 = now()
        if via_ctl:
            out = self.ctl(self.port[f"{which}_admin"], "reload")
            t_done = now() if out.returncode == 0 else None
            if out.returncode == 0 and "reloaded" not in out.stdout:
                self.failures.append(f"ctl reload {which}: {out.stdout.strip()}")
        else:
            proc.hup()
            t_done = self.wait_for(f"{kind}: the reload logged", lambda: proc.log_text().count("SIGHUP:") > before)
            text = proc.log_text()
            last = text[text.rfind("SIGHUP:") :].splitlines()[0] if "SIGHUP:" in text else ""
            if "reloaded" not in last:
                self.failures.append(f"SIGHUP {which}: {last}")
        self.window(kind, "reload", t0, t_done, scopes)

    def inject(self, kind):
        if kind == "kill-master":
            self.fault_kill_cache("MASTER")
        elif kind == "kill-slave":
            self.fault_kill_cache("SLAVE")
        elif kind == "switchover":
            self.fault_switchover()
        elif kind == "kill-backend":
            self.fault_kill_backend()
        elif kind == "drain-l4":
            self.fault_drain("l4")
        elif kind == "drain-l7":
            self.fault_drain("l7")
        elif kind == "reload-l4":
            self.fault_reload("l4")
        elif kind == "reload-l7":
            self.fault_reload("l7")

    # ----- run

    def start_all(self):
        for p in self.apps.values():
            p.start()
        self.a.start()
        self.b.start()
        self.l7.start()
        self.l4.start()
        self.wait_for("start: everything up and healthy", self.steady, limit=30, every=0.2)
        if self.failures:
            raise SystemExit("the processes did not start healthy; see " + self.dir)

    def start_load(self, duration):
        deadline = now() + duration
        r = self.args.rate
        w = []
        mk = lambda i: random.Random(f"{self.args.seed}/{i}")  # noqa: E731
        for i in range(2):
            w.append(CacheWorker(f"l4c{i}", "l4-cache", self.addr["l4_cache"], 120 * r, self.stats, self.stop_load, deadline, mk(f"l4c{i}"), 150))
        for n in ("a", "b"):
            w.append(CacheWorker(f"dir{n}", f"direct-{n}", self.addr[n], 80 * r, self.stats, self.stop_load, deadline, mk(f"dir{n}"), 0))
        names = sorted(self.apps)
        w.append(HttpWorker("h7k", "http-l7", self.addr["l7"], 80 * r, True, self.stats, self.stop_load, deadline, mk("h7k"), names))
        w.append(HttpWorker("h7c", "http-l7", self.addr["l7"], 30 * r, False, self.stats, self.stop_load, deadline, mk("h7c"), names))
        w.append(HttpWorker("h4c", "http-l4", self.addr["l4_web"], 30 * r, False, self.stats, self.stop_load, deadline, mk("h4c"), names))
        for t in w:
            t.start()
        self.workers = w
        self.cache_workers = [t for t in w if isinstance(t, CacheWorker)]
        return deadline

    def fds_now(self):
        return {p.name: (p.pid, proc_fds(p.pid), proc_rss_kb(p.pid)) for p in self.sampler.procs if p.alive()}

    def run(self):
        a = self.args
        log(f"soak: seed {a.seed}, duration {a.duration} s, rate x{a.rate}, dir {self.dir}")
        self.setup()
        log("ports: " + ", ".join(f"{k}={v}" for k, v in self.port.items()))
        self.start_all()
        log("all processes up; pair streaming; every balanced server up")
        self.sampler.sample()
        time.sleep(3)
        self.fds_before = self.fds_now()
        log("before load: " + ", ".join(f"{n} pid {pid} fds {fd} rss {rss} kB" for n, (pid, fd, rss) in self.fds_before.items()))
        self.sampler.phase = "load"
        self.sampler.start()
        t_load = now()
        deadline = self.start_load(a.duration)
        # faults, one at a time, on a seeded schedule; none starts in the last 30 s
        kinds = ["kill-master", "kill-slave", "switchover", "kill-backend", "drain-l4", "drain-l7", "reload-l4", "reload-l7"]
        weights = [3, 3, 1, 3, 2, 2, 2, 2]
        time.sleep(min(10, a.duration / 6))
        while now() < deadline - 30:
            for p in self.procs:
                if not p.alive():
                    self.failures.append(f"{p.name} (pid {p.pid}) exited by itself: {p.popen.returncode}")
                    log(f"FAILURE: {p.name} exited by itself")
                    p.start()
            if self.wait_for("steady before the next fault", self.steady, every=0.2) is None:
                continue
            kind = self.rng.choices(kinds, weights)[0]
            self.inject(kind)
            gap = self.rng.uniform(4, 12)
            if now() + gap >= deadline - 30:
                break
            time.sleep(gap)
        log("no more faults; load runs to the end")
        while now() < deadline and all(t.is_alive() for t in self.workers):
            time.sleep(0.5)
        self.stop_load.set()
        for t in self.workers:
            t.join(timeout=10)
        t_end = now()
        self.sampler.phase = "after"
        log(f"load stopped after {t_end - t_load:.0f} s")
        self.wait_for("steady after the load", self.steady, every=0.2)
        self.quiesce()
        self.converge()
        self.stop_sampler.set()
        self.sampler.join(timeout=SAMPLE_EVERY + 2)
        self.sampler.sample()
        self.sampler.close()
        return self.report(t_load, t_end)

    def quiesce(self):
        """Waits (at most 60 s) until every process is back to its fd count before the load;
        idle keep-alive connections to the backends close after 5 s."""
        deadline = now() + 60
        while True:
            after = self.fds_now()
            ok = all(after.get(n, (0, 0, 0))[1] <= fb for n, (_, fb, _) in self.fds_before.items())
            if ok or now() > deadline:
                break
            time.sleep(1)
        self.fds_after = after
        self.t_quiet = now()
        log("after load: " + ", ".join(f"{n} pid {pid} fds {fd} rss {rss} kB" for n, (pid, fd, rss) in after.items()))

    def converge(self):
        t0 = now()

        def digests():
            sa, sb = mc_stats(self.addr["a"], "replication"), mc_stats(self.addr["b"], "replication")
            if not sa or not sb:
                return None
            return sa.get("repl_digest"), sb.get("repl_digest"), sa.get("repl_lag_bytes"), sb.get("repl_lag_bytes")

        t_eq = self.wait_for("convergence: equal replication digests", lambda: (lambda d: d is not None and d[0] == d[1])(digests()), limit=30, every=0.2)
        d = digests() or (None, None, None, None)
        keys = [k for w in self.cache_workers for k in w.keys]
        values = {}
        for n in ("a", "b"):
            c = MC(self.addr[n], timeout=5)
            got = {}
            try:
                for i in range(0, len(keys), 100):
                    got.update(c.get_many(keys[i : i + 100]))
            except (OSError, ProtoError) as e:
                self.failures.append(f"convergence: reading node {n}: {e}")
            finally:
                c.close()
            values[n] = got
        differ = [k for k in keys if values["a"].get(k) != values["b"].get(k)]
        latest = older = missing = 0
        for w in self.cache_workers:
            for k in w.keys:
                if k not in w.acked:
                    continue
                v = values["a"].get(k)
                seq = parse_value(k, v) if v is not None else None
                if v is None:
                    missing += 1
                elif seq is not None and seq >= w.acked[k]:
                    latest += 1
                else:
                    older += 1
        self.convergence = {
            "digest_a": d[0],
            "digest_b": d[1],
            "digests_equal_after_s": None if t_eq is None else round(t_eq - t0, 2),
            "keys_checked": len(keys),
            "keys_on_a": len(values["a"]),
            "keys_on_b": len(values["b"]),
            "keys_differing": len(differ),
            "differing_examples": differ[:5],
            "acked_keys_holding_last_acked_value": latest,
            "acked_keys_holding_an_older_value": older,
            "acked_keys_missing": missing,
        }
        if differ or t_eq is None:
            self.failures.append(f"convergence: {len(differ)} keys differ between the nodes; digests {d[0]} vs {d[1]}")

    # ----- report

    def report(self, t_load, t_end):
        a = self.args
        errs = sorted(self.stats.errors, key=lambda e: e["t1"])
        outside = []
        for e in errs:
            # Of the windows that cover it, the one of the latest fault started before it
            # ended: an error in the grace of one fault and just after the next belongs to
            # the next.
            e["window"] = None
            for i, w in enumerate(self.windows):
                if e["scope"] in w["scopes"] and e["t1"] >= w["start"] and e["t0"] <= w["end"]:
                    if e["window"] is None or w["start"] >= self.windows[e["window"]]["start"]:
                        e["window"] = i
            if e["window"] is None:
                outside.append(e)
        with open(os.path.join(self.dir, "errors.csv"), "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["unix_time", "since_start_s", "scope", "worker", "kind", "window", "detail"])
            for e in errs:
                w = "OUTSIDE" if e["window"] is None else f"{e['window']}:{self.windows[e['window']]['kind']}"
                wr.writerow([round(e["t1"], 3), round(e["t1"] - t_load, 3), e["scope"], e["worker"], e["kind"], w, e["detail"]])
        with open(os.path.join(self.dir, "windows.csv"), "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["id", "kind", "phase", "detail", "start_s", "end_s", "length_s", "scopes", "errors"])
            for i, w in enumerate(self.windows):
                n = sum(1 for e in errs if e["window"] == i)
                wr.writerow([i, w["kind"], w["phase"], w["detail"], round(w["start"] - t_load, 3), round(w["end"] - t_load, 3), round(w["end"] - w["start"], 3), " ".join(w["scopes"]), n])

        # panics or errors in the processes' own logs
        for p in self.procs:
            if p.opsconsole and "panicked" in p.log_text():
                self.failures.append(f"{p.name}: a panic in its log ({p.stderr_path})")

        # resources: per process incarnation (name, pid)
        rows = self.sampler.rows
        res = {}
        warm_after = max(60.0, (t_end - t_load) / 3)
        for t, name, pid, rss, fds, phase in rows:
            r = res.setdefault((name, pid), {"name": name, "pid": pid, "samples": 0, "first": None, "warm": None, "max": 0, "last": None, "t_first": t, "t_last": t, "fds_max": 0})
            r["samples"] += 1
            if r["first"] is None:
                r["first"] = rss
            if r["warm"] is None and phase == "load" and t - max(t_load, r["t_first"]) >= warm_after:
                r["warm"] = rss
            r["max"] = max(r["max"], rss)
            r["last"] = rss
            r["t_last"] = t
            r["fds_max"] = max(r["fds_max"], fds)
        rss_bound_note = f"last <= 1.25 x (RSS {warm_after:.0f} s into the load) + 8 MiB, for a process that ran the whole load"
        for r in res.values():
            whole = r["t_first"] <= t_load + 1 and r["t_last"] >= t_end
            r["whole_run"] = whole
            if whole and r["warm"] is not None and r["last"] > 1.25 * r["warm"] + 8192:
                self.failures.append(f"RSS of {r['name']} pid {r['pid']} grew from {r['warm']} kB to {r['last']} kB")

        fd_report = {}
        for n, (pid_b, fd_b, _) in self.fds_before.items():
            pid_a, fd_a, _ = self.fds_after.get(n, (None, None, None))
            fd_report[n] = {"pid_before": pid_b, "fds_before": fd_b, "pid_after": pid_a, "fds_after": fd_a}
            if fd_a is None or fd_a > fd_b:
                self.failures.append(f"fds of {n}: {fd_b} before the load (pid {pid_b}), {fd_a} after it (pid {pid_a})")

        def outside_windows(events):
            return sum(
                1 for t0, scope in events if not any(scope in w["scopes"] and w["start"] <= t0 <= w["end"] for w in self.windows)
            )

        stale_outside = outside_windows(self.stats.counts.pop("_stale", []))
        lost_outside = outside_windows(self.stats.counts.pop("_lost", []))
        if outside:
            self.failures.append(f"{len(outside)} client-visible errors outside every failover window")

        phases = {}
        for i, w in enumerate(self.windows):
            ph = phases.setdefault((w["kind"], w["phase"]), {"count": 0, "observed": [], "errors": {}})
            ph["count"] += 1
            ph["observed"].append(w["end"] - w["start"] - GRACE)
            for e in errs:
                if e["window"] == i:
                    n, late = ph["errors"].get(e["scope"], (0, 0.0))
                    ph["errors"][e["scope"]] = (n + 1, round(max(late, e["t1"] - w["start"]), 3))
        for ph in phases.values():
            ph["observed_min_s"] = round(min(ph["observed"]), 3)
            ph["observed_max_s"] = round(max(ph["observed"]), 3)
            del ph["observed"]
        summary = {
            "seed": a.seed,
            "duration_s": a.duration,
            "load_seconds": round(t_end - t_load, 1),
            "rate_factor": a.rate,
            "dir": self.dir,
            "requests": dict(sorted(self.stats.counts.items())),
            "older_value_reads_outside_windows": stale_outside,
            "written_key_misses_outside_windows": lost_outside,
            "window_phases": {f"{k} / {ph}": v for (k, ph), v in sorted(phases.items())},
            "faults": dict(sorted(self.faults.items())),
            "windows": len(self.windows),
            "window_total_s": round(sum(w["end"] - w["start"] for w in self.windows), 1),
            "errors_total": len(errs),
            "errors_inside_windows": len(errs) - len(outside),
            "errors_outside_windows": len(outside),
            "errors_by_scope_and_kind": {},
            "resources": sorted(res.values(), key=lambda r: (r["name"], r["t_first"])),
            "rss_bound": rss_bound_note,
            "fds": fd_report,
            "convergence": self.convergence,
            "failures": self.failures,
        }
        for e in errs:
            k = f"{e['scope']} {e['kind']}"
            summary["errors_by_scope_and_kind"][k] = summary["errors_by_scope_and_kind"].get(k, 0) + 1
        with open(os.path.join(self.dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)

        p = lambda s="": print(s, flush=True)  # noqa: E731
        p()
        p("=" * 78)
        p(f"soak summary: seed {a.seed}, load {t_end - t_load:.0f} s, rate x{a.rate}, files in {self.dir}")
        p("requests:")
        for k, v in summary["requests"].items():
            p(f"  {k:52} {v:>9}")
        p(f"  {'cache older-value reads outside windows':52} {stale_outside:>9}")
        p(f"  {'cache misses of written keys outside windows':52} {lost_outside:>9}")
        p("faults:")
        for k, v in summary["faults"].items():
            p(f"  {k:52} {v:>9}")
        p(f"failover windows: {len(self.windows)}, {summary['window_total_s']} s in all (each = observed recovery + {GRACE:.0f} s grace; see windows.csv)")
        p(f"client-visible errors: {len(errs)}, inside windows {len(errs) - len(outside)}, OUTSIDE {len(outside)}")
        for k, v in sorted(summary["errors_by_scope_and_kind"].items()):
            p(f"  {k:52} {v:>9}")
        p("windows by fault and phase: count, observed recovery min-max, errors by scope (the last one's time after the window opened)")
        for (kind, phase), ph in sorted(phases.items()):
            by = ", ".join(f"{k} {n} (last +{late:.2f} s)" for k, (n, late) in sorted(ph["errors"].items())) or "no errors"
            p(f"  {kind} / {phase}: {ph['count']}, {ph['observed_min_s']:.2f}-{ph['observed_max_s']:.2f} s; {by}")
        for e in outside[:20]:
            p(f"  OUTSIDE at +{e['t1'] - t_load:.3f} s {e['scope']} {e['worker']} {e['kind']}: {e['detail']}")
        p(f"RSS (kB) per process incarnation: first / {warm_after:.0f} s into the load / max / last; fds max (bound: {rss_bound_note})")
        for r in summary["resources"]:
            tag = "whole run" if r["whole_run"] else f"{r['t_first'] - t_load:+.0f}..{r['t_last'] - t_load:+.0f} s"
            p(f"  {r['name']:8} pid {r['pid']:<7} {r['first']:>7} / {r['warm'] if r['warm'] is not None else '-':>7} / {r['max']:>7} / {r['last']:>7}; fds max {r['fds_max']:>4}  ({tag}, {r['samples']} samples)")
        p("open fds before the load / after it (quiescent):")
        for n, f in fd_report.items():
            p(f"  {n:8} {f['fds_before']:>4} (pid {f['pid_before']}) / {f['fds_after']} (pid {f['pid_after']})")
        c = self.convergence
        p(
            f"convergence: digests {c['digest_a']} / {c['digest_b']} (equal after {c['digests_equal_after_s']} s); "
            f"{c['keys_checked']} keys read on both nodes, {c['keys_differing']} differ; "
            f"written keys holding the last acknowledged value {c['acked_keys_holding_last_acked_value']}, "
            f"an older one {c['acked_keys_holding_an_older_value']}, missing {c['acked_keys_missing']}"
        )
        if self.failures:
            p("FAILED:")
            for f in self.failures:
                p(f"  - {f}")
        else:
            p("PASSED")
        p("=" * 78)
        return 1 if self.failures else 0

    def cleanup(self):
        self.stop_load.set()
        self.stop_sampler.set()
        for p in self.procs:
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - cleanup goes on whatever one child did
                pass


class Tee:
    """stdout, copied into the campaign's soak.log."""

    def __init__(self, out, path):
        self.out = out
        self.file = open(path, "a")

    def write(self, s):
        self.out.write(s)
        self.file.write(s)

    def flush(self):
        self.out.flush()
        self.file.flush()


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "backend":
        run_backend(int(sys.argv[2]), sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--rate", type=float, default=1.0, help="scales every worker's request rate")
    args = ap.parse_args()
    if args.duration < 40:
        ap.error("--duration must be at least 40 s (faults stop 30 s before the end)")
    sys.stdout = Tee(sys.stdout, os.path.join(args.dir, "soak.log"))
    c = Campaign(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return c.run()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        c.cleanup()


if __name__ == "__main__":
    sys.exit(main())
