#!/usr/bin/env python3
"""Drives a memcached-protocol server with the third-party pymemcache client and checks every
result. Usage: pymemcache_check.py HOST PORT. Exits 0 when all checks pass, 1 with a list of
failures otherwise, and 2 when pymemcache is not installed (so the caller can skip)."""

import os
import sys

try:
    from pymemcache.client.base import Client
except ImportError:
    print("pymemcache is not installed (pip install pymemcache)", file=sys.stderr)
    sys.exit(2)

failures = []


def check(what, got, want):
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")


def run(host, port):
    # Keys are unique per run, so leftovers from another run cannot make a check pass.
    p = "pmc%s_" % os.urandom(4).hex()
    k = lambda name: (p + name).encode()

    c = Client((host, port), default_noreply=False, connect_timeout=5, timeout=5)

    # set / get / get_many (one multi-key get with hits and misses)
    check("set a", c.set(k("a"), b"alpha"), True)
    check("get a", c.get(k("a")), b"alpha")
    check("get missing", c.get(k("missing")), None)
    check("set b with flags", c.set(k("b"), b"beta", flags=42), True)
    check("set empty", c.set(k("empty"), b""), True)
    check("get empty", c.get(k("empty")), b"")
    check(
        "get_many",
        c.get_many([k("a"), k("b"), k("missing"), k("empty")]),
        {k("a"): b"alpha", k("b"): b"beta", k("empty"): b""},
    )
    big = bytes(range(256)) * 400  # binary data including \r\n, ~100 KB
    check("set big", c.set(k("big"), big), True)
    check("get big", c.get(k("big")), big)

    # gets / cas: success, conflict, missing
    value, cas = c.gets(k("a"))
    check("gets value", value, b"alpha")
    check("gets cas is a number", isinstance(cas, (bytes, int)) and int(cas) > 0, True)
    check("cas with current token", c.cas(k("a"), b"alpha2", cas), True)
    check("get after cas", c.get(k("a")), b"alpha2")
    check("cas with stale token", c.cas(k("a"), b"alpha3", cas), False)
    check("get after failed cas", c.get(k("a")), b"alpha2")
    check("cas on missing key", c.cas(k("nocas"), b"x", cas), None)
    many = c.gets_many([k("a"), k("b"), k("missing")])
    check("gets_many keys", sorted(many.keys()), sorted([k("a"), k("b")]))
    check("gets_many value", many.get(k("b"), (None, None))[0], b"beta")

    # incr / decr
    check("set counter", c.set(k("n"), b"10"), True)
    check("incr", c.incr(k("n"), 5), 15)
    check("decr", c.decr(k("n"), 3), 12)
    check("decr floors at 0", c.decr(k("n"), 100), 0)
    check("incr missing", c.incr(k("nonum"), 1), None)
    check("decr missing", c.decr(k("nonum"), 1), None)
    check("set 99", c.set(k("n"), b"100"), True)
    check("decr shrinks", c.decr(k("n"), 1), 99)
    # memcached keeps the length of a number decremented in place and pads it with spaces.
    check("padded after decr", c.get(k("n")), b"99 ")
    check("incr wraps at 2^64", c.set(k("w"), b"18446744073709551615") and c.incr(k("w"), 2), 1)
    try:
        c.incr(k("a"), 1)
        failures.append("incr on non-numeric value did not raise")
    except Exception as e:  # pymemcache raises MemcacheClientError
        check("incr non-numeric error", "non-numeric" in str(e), True)

    # delete / touch
    check("delete existing", c.delete(k("b")), True)
    check("delete missing", c.delete(k("b")), False)
    check("get deleted", c.get(k("b")), None)
    check("touch existing", c.touch(k("a"), 1000), True)
    check("touch missing", c.touch(k("b"), 1000), False)
    check("touch to expired", c.touch(k("empty"), -1), True)
    check("get expired", c.get(k("empty")), None)

    # add / replace / append / prepend
    check("add new", c.add(k("c"), b"c1"), True)
    check("add existing", c.add(k("c"), b"c2"), False)
    check("get after add", c.get(k("c")), b"c1")
    check("replace existing", c.replace(k("c"), b"c3"), True)
    check("replace missing", c.replace(k("nope"), b"x"), False)
    check("append", c.append(k("c"), b"-tail"), True)
    check("prepend", c.prepend(k("c"), b"head-"), True)
    check("get after append/prepend", c.get(k("c")), b"head-c3-tail")
    check("append missing", c.append(k("nope"), b"x"), False)
    check("prepend missing", c.prepend(k("nope"), b"x"), False)
    check("set_many", c.set_many({k("m1"): b"1", k("m2"): b"2"}), [])
    check("get_many after set_many", c.get_many([k("m1"), k("m2")]), {k("m1"): b"1", k("m2"): b"2"})
    check("delete_many", c.delete_many([k("m1"), k("m2")]), True)
    check("get_many after delete_many", c.get_many([k("m1"), k("m2")]), {})
    check("version", c.version().startswith(b"1."), True)

    # default_noreply=True: writes do not wait for an answer; read back to see they happened.
    q = Client((host, port), default_noreply=True, connect_timeout=5, timeout=5)
    check("noreply set", q.set(k("q"), b"quiet"), True)
    check("noreply add existing", q.add(k("q"), b"other"), True)
    check("noreply replace", q.replace(k("q"), b"quieter"), True)
    check("noreply append", q.append(k("q"), b"!"), True)
    check("noreply prepend", q.prepend(k("q"), b"~"), True)
    check("get after noreply writes", q.get(k("q")), b"~quieter!")
    check("noreply set counter", q.set(k("qn"), b"7"), True)
    q.incr(k("qn"), 3, noreply=True)
    q.decr(k("qn"), 1, noreply=True)
    # 7+3 needs a longer number (a new item); 10-1 is done in place, hence the padding.
    check("get after noreply incr/decr", q.get(k("qn")), b"9 ")
    check("noreply touch", q.touch(k("q"), 1000), True)
    check("noreply delete", q.delete(k("qn")), True)
    check("get after noreply delete", q.get(k("qn")), None)
    check("other client sees noreply writes", c.get(k("q")), b"~quieter!")

    # flush_all, both ways, last because it wipes the cache.
    check("noreply flush_all", q.flush_all(), True)
    # Read on the same connection: it is answered only after the flush was processed.
    check("get after noreply flush_all", q.get(k("q")), None)
    check("other client after flush_all", c.get(k("q")), None)
    check("set after flush", c.set(k("f"), b"f"), True)
    check("flush_all", c.flush_all(), True)
    check("get after flush_all", c.get_many([k("f"), k("a"), k("c")]), {})
    c.close()
    q.close()


def main():
    if len(sys.argv) != 3:
        print("usage: pymemcache_check.py HOST PORT", file=sys.stderr)
        return 64
    try:
        run(sys.argv[1], int(sys.argv[2]))
    except Exception as e:  # a protocol error or a dropped connection is a failure too
        failures.append(f"exception: {type(e).__name__}: {e}")
    if failures:
        print(f"{len(failures)} check(s) failed against {sys.argv[1]}:{sys.argv[2]}:")
        for f in failures:
            print("  " + f)
        return 1
    print("all pymemcache checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
