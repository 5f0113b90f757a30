#!/usr/bin/env python3
"""Drives several cache servers as one keyspace through pymemcache's HashClient with ketama
(libketama's continuum: 160 points per server from MD5), and records every error with the
time it happened, so the caller can check that errors only occur on the server it broke and
only inside the failover window.

Usage: hash_failover.py KEYS HOST:PORT [HOST:PORT ...]

Protocol on stdout (one line each, flushed):
  LOADED {json}    the KEYS keys are written; json maps each key to the server ketama picked
  ROUND n          pass n over every key finished (reads, plus one new write per 10 reads)
  RESULT {json}    after STOP on stdin: every error, and the final read of every key
Exit 0 when the run completed (the caller judges the result), 1 on a setup failure, 2 when
pymemcache is missing."""

import bisect
import hashlib
import json
import sys
import threading
import time

try:
    from pymemcache.client.hash import HashClient
    from pymemcache.exceptions import MemcacheServerError
except ImportError:
    print("pymemcache is not installed (pip install pymemcache)", file=sys.stderr)
    sys.exit(2)


class Ketama:
    """The hasher interface HashClient expects (add_node, remove_node, get_node), as the
    libketama continuum: each server gets 40 MD5 digests of "server-i", four points each."""

    def __init__(self):
        self.nodes = []
        self.ring = []

    def _rebuild(self):
        ring = []
        for node in self.nodes:
            for i in range(40):
                d = hashlib.md5(("%s-%d" % (node, i)).encode()).digest()
                for h in range(4):
                    point = d[h * 4] | d[h * 4 + 1] << 8 | d[h * 4 + 2] << 16 | d[h * 4 + 3] << 24
                    ring.append((point, node))
        ring.sort()
        self.ring = ring
        self.points = [p for p, _ in ring]

    def add_node(self, node):
        self.nodes.append(node)
        self._rebuild()

    def remove_node(self, node):
        self.nodes.remove(node)
        self._rebuild()

    def get_node(self, key):
        if not self.ring:
            return None
        if isinstance(key, str):
            key = key.encode()
        d = hashlib.md5(key).digest()
        h = d[0] | d[1] << 8 | d[2] << 16 | d[3] << 24
        i = bisect.bisect_left(self.points, h)
        return self.ring[i % len(self.ring)][1]


def stored_here(exc):
    # A sync-mode node without its peer keeps the write and says so: not an outage.
    return isinstance(exc, MemcacheServerError) and "it is stored here" in str(exc)


def main():
    count = int(sys.argv[1])
    servers = [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in sys.argv[2:])]
    # The server list never changes (each entry is a pair behind its own failover address),
    # so a failing entry must never be dropped from the ring: that would move its keys to
    # the other pairs, where they are not. Retry it on every call instead, and raise.
    client = HashClient(
        servers,
        hasher=Ketama,
        retry_attempts=10**9,
        retry_timeout=0,
        dead_timeout=10**9,
        ignore_exc=False,
        connect_timeout=2,
        timeout=2,
        default_noreply=False,
    )
    owner = lambda key: client.hasher.get_node(key)

    expected = {}
    for i in range(count):
        key, value = "key%05d" % i, ("value%d" % i).encode()
        if client.set(key, value) is not True:
            print("setting %s failed" % key, file=sys.stderr)
            sys.exit(1)
        expected[key] = value
    print("LOADED " + json.dumps({k: owner(k) for k in expected}), flush=True)

    stop = threading.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "STOP":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    events = []  # [time, server, op, key, outcome]
    ops = {"read": 0, "write": 0}
    written = 0
    rounds = 0
    keys = sorted(expected)
    while not stop.is_set():
        for n, key in enumerate(keys):
            if stop.is_set():
                break
            ops["read"] += 1
            try:
                got = client.get(key)
                if got != expected[key]:
                    events.append([time.time(), owner(key), "read", key, "wrong value %r" % (got,)])
            except Exception as e:  # every failure is data here
                events.append([time.time(), owner(key), "read", key, "%s: %s" % (type(e).__name__, e)])
            if n % 10 == 0:
                wkey, wvalue = "new%06d" % written, ("w%d" % written).encode()
                written += 1
                ops["write"] += 1
                try:
                    ok = client.set(wkey, wvalue)
                    if ok is True:
                        expected[wkey] = wvalue
                    else:
                        events.append([time.time(), owner(wkey), "write", wkey, "returned %r" % (ok,)])
                except Exception as e:
                    if stored_here(e):
                        expected[wkey] = wvalue
                        events.append([time.time(), owner(wkey), "write", wkey, "unconfirmed"])
                    else:
                        events.append([time.time(), owner(wkey), "write", wkey, "%s: %s" % (type(e).__name__, e)])
        rounds += 1
        print("ROUND %d" % rounds, flush=True)

    # The end: every key written, the first ones and every write that was kept, reads back.
    final = {"missing": [], "errors": []}
    for key, value in expected.items():
        try:
            got = client.get(key)
            if got != value:
                final["missing"].append([key, owner(key), repr(got)])
        except Exception as e:
            final["errors"].append([key, owner(key), "%s: %s" % (type(e).__name__, e)])
    result = {
        "ops": ops,
        "rounds": rounds,
        "events": events,
        "final": final,
        "checked": len(expected),
        "per_server": {s: sum(1 for k in expected if owner(k) == s) for s in client.clients},
    }
    print("RESULT " + json.dumps(result), flush=True)


main()
