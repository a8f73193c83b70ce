#!/usr/bin/env python3
"""The benchmark harness behind `bench/run`: measure the release binaries
against their baselines in one run, print one table.

Everything it starts listens on loopback only (127.0.0.1, and 127.0.1.x for
the simulated BMCs), runs in a temp directory of its own, and is stopped
when the harness ends: normally, on an error, on Ctrl-C, SIGTERM or SIGHUP.
Nothing here sleeps to synchronise: every wait polls with a deadline.

See docs/benchmarks.md for what each row measures and how.
"""

import argparse
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
SERVER = os.path.join(RELEASE, "power-server")
CLIENT = os.path.join(RELEASE, "power")
DRIVERS = os.path.join(ROOT, "drivers")
TOPOLOGY = os.path.join(ROOT, "topology.d")

# The heavy baselines last: the per-node 10,000-node job (health) and the
# per-node aws runs keep both cores busy, and the load they leave behind
# would weigh on the groups after them.
GROUPS = ["sim", "ipmi", "10k", "scale", "health", "aws"]
MiB = 1024 * 1024


class Skip(Exception):
    """A row that cannot run here (missing platform, not root, ...)."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, through every `finally`."""


# --------------------------------------------------------------------------
# Processes: every one in its own session, stopped at the end.


class Procs:
    """The processes the harness started, stopped in reverse order."""

    def __init__(self):
        self.items = []  # (name, Popen, extra pids)

    def spawn(self, name, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.items.append([name, proc, []])
        return proc

    def adopt_descendants(self, proc, names):
        """Remember `proc`'s children named in `names` (powermand's
        coprocesses run in sessions of their own, out of its group)."""
        for entry in self.items:
            if entry[1] is proc:
                for pid in children(proc.pid):
                    if comm(pid) in names:
                        entry[2].append((pid, comm(pid)))

    def stop(self, proc, grace=5.0):
        for entry in list(self.items):
            if entry[1] is proc:
                stop_entry(entry, grace)
                self.items.remove(entry)

    def stop_all(self):
        while self.items:
            entry = self.items.pop()
            try:
                stop_entry(entry, 5.0)
            except Exception as e:  # keep stopping the others
                print(f"bench: stopping {entry[0]}: {e}", file=sys.stderr)


def stop_entry(entry, grace):
    """SIGTERM to the process group, a second SIGTERM after `grace` (the
    server then kills its drivers at once), SIGKILL as a last resort; then
    the remembered coprocesses, if still theirs."""
    name, proc, extra = entry
    if proc.poll() is None:
        killpg(proc.pid, signal.SIGTERM)
        if not wait_exit(proc, grace):
            killpg(proc.pid, signal.SIGTERM)
            if not wait_exit(proc, grace):
                killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever is left of its group, while the group id cannot have
        # been reused: its leader was reaped a moment ago.
        killpg(proc.pid, signal.SIGKILL)
    for pid, cmd in extra:
        if comm(pid) == cmd:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_exit(proc, within):
    try:
        proc.wait(timeout=within)
        return True
    except subprocess.TimeoutExpired:
        return False


def children(pid):
    """The children of process `pid`, whichever of its threads forked them."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def poll(what, deadline, f, pause=0.002):
    """Call `f` until it returns something other than None; fail naming
    `what` after `deadline` seconds."""
    start = time.monotonic()
    while True:
        v = f()
        if v is not None:
            return v
        if time.monotonic() - start > deadline:
            raise RuntimeError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid):
    """(own, descendants') CPU seconds of process `pid`: the descendants'
    are those it reaped plus those still running (a persistent driver)
    with what they reaped."""
    def stat(p):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0, 0
        return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
    tick = os.sysconf("SC_CLK_TCK")
    own, reaped = stat(pid)
    live, todo = 0, children(pid)
    while todo:
        p = todo.pop()
        a, b = stat(p)
        live += a + b
        todo.extend(children(p))
    return own / tick, (reaped + live) / tick


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def clean_env(**extra):
    """The harness's environment without the project's settings and
    anything AWS, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POWER_", "AWS_")) and k not in ("RUST_LOG",)
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def timed(argv, env, check_out=None):
    """Run `argv` to completion with its output captured; (seconds, rc,
    stdout, stderr). The clock covers the whole command, fork to exit."""
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    if check_out is not None:
        problem = check_out(r.returncode, r.stdout, r.stderr)
        if problem:
            raise RuntimeError(
                f"{' '.join(argv[:3])}...: {problem}\nexit {r.returncode}\n"
                f"stdout (tail): {r.stdout[-800:]}\nstderr (tail): {r.stderr[-800:]}")
    return took, r.returncode, r.stdout, r.stderr


def median_of(label, runs, warmups, f, setup=None):
    """Run `f` (which returns seconds) `warmups` times unrecorded, then
    `runs` times, each after `setup` (untimed) if given; the median and
    every sample."""
    def once():
        if setup:
            setup()
        return f()
    for _ in range(warmups):
        once()
    samples = [once() for _ in range(runs)]
    med = statistics.median(samples)
    log(f"  {label}: median {ms(med)} of {runs} "
        f"[{', '.join(f'{s * 1e3:.1f}' for s in samples)}] ms")
    return med, samples


def side_by_side(runs, warmups, entries):
    """Time several commands side by side: `entries` are (label, f, setup)
    with `f` and `setup` (None: none) as in `median_of`. Each round runs
    every entry once, forwards in even rounds and backwards in odd ones, so
    a machine that drifts (load, caches, the sims' state) and the order of
    the runs favour none of them. Logs each entry as `median_of` does and
    returns their medians, in the order given."""
    def once(f, setup):
        if setup:
            setup()
        return f()
    for _ in range(warmups):
        for _, f, setup in entries:
            once(f, setup)
    samples = [[] for _ in entries]
    for r in range(runs):
        order = range(len(entries)) if r % 2 == 0 else reversed(range(len(entries)))
        for i in order:
            _, f, setup = entries[i]
            samples[i].append(once(f, setup))
    medians = []
    for (label, _, _), taken in zip(entries, samples):
        med = statistics.median(taken)
        log(f"  {label}: median {ms(med)} of {runs} "
            f"[{', '.join(f'{s * 1e3:.1f}' for s in taken)}] ms")
        medians.append(med)
    return medians


def ms(seconds):
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# The server and the client.


class Server:
    """A `power-server serve` on 127.0.0.1, in a directory of its own."""

    def __init__(self, bench, name, files, env=None, shipped=(), args=()):
        self.bench = bench
        self.args = list(args)
        self.dir = os.path.join(bench.tmp, name)
        self.topology = os.path.join(self.dir, "topology.d")
        for sub in ("topology.d", "runtime", "config", "home"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        for frag in shipped:  # the shipped platforms, copied as they are
            shutil.copy(os.path.join(TOPOLOGY, frag), self.topology)
        for fname, text in files.items():
            with open(os.path.join(self.topology, fname), "w") as f:
                f.write(text)
        self.secret = os.urandom(32).hex()
        self.env = clean_env(
            XDG_CONFIG_HOME=os.path.join(self.dir, "config"),
            POWER_SIM_DIR=os.path.join(bench.state, name),
            POWER_SERVER_JWT_SECRET=self.secret,
            **(env or {}),
        )
        self.log_path = os.path.join(self.dir, "server.log")
        self.url = None
        self.proc = None
        self.token_value = None

    def load_args(self):
        return ["--topology-dir", self.topology, "--drivers-dir", DRIVERS,
                "--runtime-dir", os.path.join(self.dir, "runtime")]

    def start(self, deadline=120):
        """Start and wait for the address line; returns seconds from spawn
        to the first `/healthz` answer."""
        argv = [SERVER, "serve", "--bind", "127.0.0.1:0", *self.load_args(),
                "--shutdown-grace", "2s", "--log-level", "info",
                "--audit-log", os.path.join(self.dir, "audit.log"), *self.args]
        t = time.perf_counter()
        self.proc = self.bench.procs.spawn(
            "power-server", argv, env=self.env, stdout=subprocess.PIPE,
            stderr=open(self.log_path, "w"))
        fd = self.proc.stdout
        ready, _, _ = select.select([fd], [], [], deadline)
        line = fd.readline().decode() if ready else ""
        m = re.match(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        if not m:
            raise RuntimeError(f"power-server did not start (stdout {line!r}); its log:\n"
                               + self.log()[:2000])
        self.url, self.port = m.group(1), int(m.group(2))
        threading.Thread(target=lambda: fd.read(), daemon=True).start()
        poll("/healthz", deadline, lambda: True if self.healthz() else None, pause=0.001)
        took = time.perf_counter() - t
        self.token_value = self.token()
        return took

    def healthz(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
            c.close()
            return ok
        except OSError:
            return False

    def token(self):
        r = subprocess.run([SERVER, "token"], env=self.env, capture_output=True,
                           text=True, check=True)
        return r.stdout.strip()

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def client_env(self):
        home = os.path.join(self.dir, "home")
        return clean_env(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
                         POWER_URL=self.url, POWER_TOKEN=self.token_value,
                         NO_COLOR="1")

    def power(self, *args, expect=None, count=None):
        """Time `power ARGS...`; with `expect`, check that `count` node
        rows were printed and each row's word is in `expect`."""
        def check(rc, out, err):
            rows = [l.split(None, 2) for l in out.splitlines() if l.strip()]
            bad = [r for r in rows if len(r) < 2 or r[1] not in expect]
            if bad:
                return f"{len(bad)} unexpected rows, first {bad[0]}"
            if count is not None and len(rows) != count:
                return f"{len(rows)} rows, expected {count}"
            return None
        return timed([CLIENT, *args], self.client_env(), check if expect else None)[0]

    def api(self, query):
        """Time one status request straight to the API (no client), reading
        the whole NDJSON stream, as the client asks for it."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        t = time.perf_counter()
        c.request("GET", query, headers={"Authorization": f"Bearer {self.token_value}",
                                         "Accept": "application/x-ndjson"})
        r = c.getresponse()
        body = r.read()
        took = time.perf_counter() - t
        c.close()
        if r.status != 200:
            raise RuntimeError(f"GET {query}: {r.status} {body[:300]!r}")
        return took

    def batch_runs(self):
        """The durations (s) of the batch driver runs logged so far."""
        return [int(m) / 1e3 for m in
                re.findall(r"duration_ms=(\d+).*batch driver run|batch driver run.*duration_ms=(\d+)",
                           self.log()) for m in m if m]

    def reloads_seen(self):
        return self.log().count("topology reloaded")

    def stop(self):
        if self.proc:
            self.bench.procs.stop(self.proc)
            self.proc = None


def pm_check():
    """A check of `pm`'s answer: success, and no node `unknown`."""
    def check(rc, out, err):
        if rc != 0:
            return "pm failed"
        m = re.search(r"^unknown:\s*(\S*)", out, re.M)
        if m and m.group(1):
            return f"unknown nodes: {m.group(1)}"
        return None
    return check


class Powerman:
    """A `powermand` on 127.0.0.1 with the given device and node lines."""

    def __init__(self, bench, name, conf_lines, coprocess):
        self.bench = bench
        self.dir = os.path.join(bench.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "powerman.conf")
        with open(self.conf, "w") as f:
            f.write(f'listen "127.0.0.1:{self.port}"\n' + "\n".join(conf_lines) + "\n")
        self.log_path = os.path.join(self.dir, "powermand.log")
        self.proc = bench.procs.spawn(
            "powermand", ["powermand", "-f", "-c", self.conf],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))
        self.coprocess = coprocess
        self.env = clean_env()

    def pm(self, *args, check=None):
        return timed(["pm", "-h", f"127.0.0.1:{self.port}", *args], self.env,
                     check or pm_check())[0]

    def wait_ready(self, devices, deadline=60):
        """Until every device's coprocess is connected and `pm -q` answers
        with no unknown node."""
        def connected():
            if self.proc.poll() is not None:
                raise RuntimeError("powermand exited:\n" + open(self.log_path).read()[-2000:])
            with open(self.log_path, errors="replace") as f:
                n = f.read().count("_pipe_connect(")
            return True if n >= devices else None
        poll("powermand's coprocesses", deadline, connected)

        def answers():
            r = subprocess.run(["pm", "-h", f"127.0.0.1:{self.port}", "-q"],
                               env=self.env, capture_output=True, text=True)
            m = re.search(r"^unknown:\s*(\S*)", r.stdout, re.M)
            return True if r.returncode == 0 and m and not m.group(1) else None
        poll("pm -q with every node known", deadline, answers)
        self.bench.procs.adopt_descendants(self.proc, {self.coprocess})


# --------------------------------------------------------------------------
# Results.


class Row:
    """One line of the table."""

    def __init__(self, name, ours, baseline, ratio, target, result):
        self.cells = [name, ours, baseline, ratio, target, result]


def verdict(ok):
    return "pass" if ok else "short"


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="power-bench-")
        # The sim driver's state files on tmpfs when there is one, as vpcd
        # keeps its plugs in memory: on a disk file system, rewriting 1,000
        # small files costs more than everything else (ext4 flushes a file
        # truncated and rewritten on close: auto_da_alloc).
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.state = tempfile.mkdtemp(prefix="power-bench-sim-", dir=shm)
        self.procs = Procs()
        self.rows = []
        self.runs = args.runs

    def missing(self, *paths):
        gone = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
        if gone:
            raise Skip("n/a (platform missing: " + ", ".join(gone) + ")")

    # ---------------------------------------------------------------- sim
    def group_sim(self):
        """1,008 simulated nodes: status and on, batch sim vs powerman on
        63 vpcd coprocesses (and a persistent batch sim, where the server
        has persistent drivers)."""
        n = 1008
        log("== sim: 1,008 nodes, batch sim platform vs powerman + vpcd")
        persistent = self.has_persistent()
        text = ("platforms:\n  simb:\n    driver: sim\n    batch: true\n"
                "    variables: [sim_initial]\n    timeout: 60s\n")
        if persistent:
            text += ("  simq:\n    driver: sim\n    batch: true\n    persistent: true\n"
                     "    variables: [sim_initial]\n    timeout: 60s\n")
        text += f"static_nodes:\n  n[0001-{n}]:\n    platform: simb\n"
        if persistent:
            text += f"  q[0001-{n}]:\n    platform: simq\n"
        server = Server(self, "sim", {"50-bench.yaml": text})
        server.start()
        lines = ['include "/etc/powerman/vpc.dev"']
        for d in range(n // 16):
            lines.append(f'device "vpc{d}" "vpc" "/usr/sbin/vpcd |&"')
            lo = d * 16 + 1
            lines.append(f'node "n[{lo:04d}-{lo + 15:04d}]" "vpc{d}" "[0-15]"')
        pm = Powerman(self, "powerman-vpc", lines, "vpcd")
        pm.wait_ready(n // 16)
        nodes = f"n[0001-{n}]"
        pnodes = f"q[0001-{n}]"

        # Each baseline is timed side by side with the figures it is the
        # baseline of, in alternating order (`side_by_side`).
        status = [("power status (batch sim)",
                   lambda: server.power("status", nodes, expect={"Off"}, count=n), None),
                  ("pm -q", lambda: pm.pm("-q"), None)]
        if persistent:
            status.append(("power status (persistent batch sim)",
                           lambda: server.power("status", pnodes, expect={"Off"}, count=n),
                           None))
        ours, base, *pers = side_by_side(self.runs, 1, status)
        self.breakdown(server, f"/?nodes={nodes}", ["status", nodes])
        median_of("  for scale: power status --summary (pm -q's form: one hostlist per state)",
                  self.runs, 1, lambda: server.power("status", "--summary", nodes))
        self.rows.append(Row("1,008 nodes status: power status vs pm -q",
                             ms(ours), ms(base), f"{ours / base:.2f}x", "<= 1.0x",
                             verdict(ours <= base)))
        if pers:
            self.rows.append(Row("  the same, persistent batch sim",
                                 ms(pers[0]), ms(base), f"{pers[0] / base:.2f}x", "<= 1.0x",
                                 verdict(pers[0] <= base)))
        # Each timed `on` switches every node from off (an untimed `off`
        # first, on both sides): a sim node already on is left alone.
        on = [("power on (batch sim), each from all off",
               lambda: server.power("on", nodes, expect={"Starting"}, count=n),
               lambda: server.power("off", nodes, expect={"Stopping"}, count=n)),
              ("pm -1, each from all off", lambda: pm.pm("-1", nodes),
               lambda: pm.pm("-0", nodes))]
        if persistent:
            on.append(("power on (persistent batch sim), each from all off",
                       lambda: server.power("on", pnodes, expect={"Starting"}, count=n),
                       lambda: server.power("off", pnodes, expect={"Stopping"}, count=n)))
        ours, base, *pers = side_by_side(self.runs, 1, on)
        self.rows.append(Row("1,008 nodes on: power on vs pm -1",
                             ms(ours), ms(base), f"{ours / base:.2f}x", "<= 1.0x",
                             verdict(ours <= base)))
        if pers:
            self.rows.append(Row("  the same, persistent batch sim",
                                 ms(pers[0]), ms(base), f"{pers[0] / base:.2f}x", "<= 1.0x",
                                 verdict(pers[0] <= base)))
        # Both now report every node on: one more status each, as a check.
        server.power("status", nodes, expect={"On"}, count=n)
        out = subprocess.run(["pm", "-h", f"127.0.0.1:{pm.port}", "-q"],
                             capture_output=True, text=True).stdout
        if not re.search(r"^off:\s*$", out, re.M):
            raise RuntimeError(f"powerman did not switch every plug on:\n{out}")
        self.procs.stop(pm.proc)
        server.stop()

    def has_persistent(self):
        """Whether this server takes `persistent: true` (a batch driver kept
        running between chunks): asked of `power-server check` once."""
        if not hasattr(self, "_persistent"):
            d = tempfile.mkdtemp(dir=self.tmp)
            with open(os.path.join(d, "p.yaml"), "w") as f:
                f.write("platforms:\n  p:\n    driver: sim\n    batch: true\n"
                        "    persistent: true\n")
            r = subprocess.run([SERVER, "check", "--topology-dir", d, "--drivers-dir", DRIVERS,
                                "--runtime-dir", os.path.join(d, "run")],
                               env=clean_env(), capture_output=True, text=True)
            self._persistent = r.returncode == 0
            if not self._persistent:
                log("  (no persistent batch drivers in this server: those rows are left out)")
        return self._persistent

    def breakdown(self, server, query, client_args):
        """Where a client command's time goes: the same request straight to
        the API; the CPU time of the server itself, of its drivers and of
        the client, per request; and the batch driver runs the server
        logged (chunks)."""
        before = len(server.batch_runs())
        cpu0 = proc_cpu(server.proc.pid)
        median_of("  of which the API answer alone (HTTP GET, NDJSON)", self.runs, 1,
                  lambda: server.api(query))
        cpu1 = proc_cpu(server.proc.pid)
        n = self.runs + 1
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(n):
            server.power(*client_args)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # The runs of both loops (2n requests), read after them: a chunk's
        # line is logged when its driver exits, which may be just after its
        # request's answer, so the last request's may still be missing.
        runs = server.batch_runs()[before:]
        client_cpu = (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) / n
        log(f"    CPU per request: server {(cpu1[0] - cpu0[0]) / n * 1e3:.1f} ms, its drivers "
            f"{(cpu1[1] - cpu0[1]) / n * 1e3:.1f} ms, the client {client_cpu * 1e3:.1f} ms")
        if runs:
            log(f"    batch driver runs: {round(len(runs) / (2 * n))} chunks a request, each "
                f"{min(runs) * 1e3:.0f}-{max(runs) * 1e3:.0f} ms (median "
                f"{statistics.median(runs) * 1e3:.0f} ms)")

    # ---------------------------------------------------------------- ipmi
    def group_ipmi(self):
        """16 ipmi_sim BMCs, status: ipmipower platform vs powerman driving
        ipmipower, and vs the per-node ipmi platform."""
        log("== ipmi: 16 ipmi_sim BMCs, status")
        if os.geteuid() != 0:
            raise Skip("n/a (needs root: BMCs on UDP port 623)")
        for tool in ("ipmi_sim", "ipmipower", "ipmitool", "powermand"):
            if not shutil.which(tool):
                raise Skip(f"n/a ({tool} not installed)")
        have_batch = all(os.path.exists(os.path.join(ROOT, p)) for p in
                         ("topology.d/10-ipmipower.yaml", "drivers/ipmipower"))
        n = 16
        bmcs = start_bmcs(self, n)
        password = bmcs[0]["password"]
        hosts = ",".join(b["addr"] for b in bmcs)

        # powerman + one ipmipower coprocess (powerman's ipmipower.dev). The
        # password is in a 0600 FreeIPMI config file, not on a command line.
        conf = os.path.join(self.tmp, "freeipmi.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, f"username admin\npassword {password}\n".encode())
        os.close(fd)
        pm = Powerman(self, "powerman-ipmi", [
            'include "/etc/powerman/ipmipower.dev"',
            f'device "ipmi0" "ipmipower" "/usr/sbin/ipmipower -D LAN_2_0 '
            f'--config-file {conf} -W opensesspriv -h {hosts} |&"',
        ] + [f'node "bmc{i + 1:02d}" "ipmi0" "{b["addr"]}"' for i, b in enumerate(bmcs)],
            "ipmipower")
        pm.wait_ready(1)

        files = {"50-bench.yaml": "static_nodes:\n" + "".join(
            f"  bmc{i + 1:02d}:\n    platform: ipmi\n    ipmi_host: {b['addr']}\n"
            f"    ipmi_username: admin\n    ipmi_password: {password}\n"
            f"    ipmi_cipher: '3'\n"
            for i, b in enumerate(bmcs))}
        shipped = ["10-ipmi.yaml"]
        if have_batch:
            shipped.append("10-ipmipower.yaml")
            files["51-bench.yaml"] = "static_nodes:\n" + "".join(
                f"  bb{i + 1:02d}:\n    platform: ipmipower\n"
                + ipmipower_vars(b["addr"], password)
                for i, b in enumerate(bmcs))
        server = Server(self, "ipmi", files, shipped=shipped)
        server.start()

        pm_q = ("pm -q (powerman + ipmipower)", lambda: pm.pm("-q"), None)
        if have_batch:
            # Side by side with its baseline (`side_by_side`), before the
            # per-node platform's 16 ipmitool sessions a run load the sims.
            base, ours = side_by_side(self.runs, 1, [
                pm_q,
                ("power status (batch ipmipower)",
                 lambda: server.power("status", f"bb[01-{n}]", expect={"Off"}, count=n), None)])
        else:
            base, _ = median_of(pm_q[0], self.runs, 1, pm_q[1])
        pernode, _ = median_of("power status (per-node ipmi, ipmitool)", self.runs, 1,
                               lambda: server.power("status", f"bmc[01-{n}]",
                                                    expect={"Off"}, count=n))
        if have_batch:
            self.breakdown(server, f"/?nodes=bb[01-{n}]", ["status", f"bb[01-{n}]"])
            median_of("  for scale: one ipmipower --stat alone, as the driver runs it", self.runs,
                      1, lambda: timed(["ipmipower", "-D", "LAN_2_0", "--config-file", conf,
                                        "-W", "opensesspriv", "-h", hosts, "--stat"],
                                       clean_env())[0])
            self.rows.append(Row("16 BMCs status: ipmipower platform vs powerman+ipmipower",
                                 ms(ours), ms(base), f"{ours / base:.2f}x", "<= 1.0x",
                                 verdict(ours <= base)))
            self.rows.append(Row("16 BMCs status: ipmipower platform vs per-node ipmi",
                                 ms(ours), ms(pernode), f"{ours / pernode:.2f}x", "-", "-"))
        else:
            self.rows.append(Row("16 BMCs status: ipmipower platform vs powerman+ipmipower",
                                 "n/a (platform missing)", ms(base), "-", "<= 1.0x", "n/a"))
            self.rows.append(Row("16 BMCs status: per-node ipmi vs powerman+ipmipower",
                                 ms(pernode), ms(base), f"{pernode / base:.2f}x", "-", "-"))
        self.procs.stop(pm.proc)
        server.stop()

    # ---------------------------------------------------------------- 10k
    def group_10k(self):
        """10,000 simulated nodes, status through the client: batch vs
        per-node sim."""
        n = 10000
        log("== 10k: 10,000 sim nodes, status end to end")
        persistent = self.has_persistent()
        server = Server(self, "10k", {"50-bench.yaml": sim_topology(n, both=True,
                                                                    persistent=persistent)})
        server.start()
        ours, _ = median_of("power status (batch sim)", self.runs, 1,
                            lambda: server.power("status", f"b[00001-{n}]",
                                                 expect={"Off"}, count=n))
        self.breakdown(server, f"/?nodes=b[00001-{n}]", ["status", f"b[00001-{n}]"])
        # The per-node run takes seconds: one run after a 100-node warm-up.
        server.power("status", "p[00001-00100]", expect={"Off"}, count=100)
        base, _ = median_of("power status (per-node sim)", 1, 0,
                            lambda: server.power("status", f"p[00001-{n}]",
                                                 expect={"Off"}, count=n))
        self.rows.append(Row("10,000 nodes status: batch sim vs per-node sim",
                             ms(ours), ms(base), f"{base / ours:.0f}x faster",
                             "< 150 ms", verdict(ours < 0.150)))
        big, _ = median_of("power status (batch sim, batch_max 1000)", self.runs, 1,
                           lambda: server.power("status", f"k[00001-{n}]",
                                                expect={"Off"}, count=n))
        self.rows.append(Row("  the same, batch_max 1000 (10 chunks)",
                             ms(big), ms(base), f"{base / big:.0f}x faster",
                             "< 150 ms", verdict(big < 0.150)))
        if persistent:
            pers, _ = median_of("power status (persistent batch sim)", self.runs, 1,
                                lambda: server.power("status", f"q[00001-{n}]",
                                                     expect={"Off"}, count=n))
            self.breakdown(server, f"/?nodes=q[00001-{n}]", ["status", f"q[00001-{n}]"])
            self.rows.append(Row("  the same, persistent batch sim",
                                 ms(pers), ms(base), f"{base / pers:.0f}x faster",
                                 "< 150 ms", verdict(pers < 0.150)))
        server.stop()

    # ---------------------------------------------------------------- aws
    def group_aws(self):
        """200 instances on moto: the aws-batch platform vs the per-node
        aws platform."""
        n = 200
        log("== aws: 200 moto instances, status")
        for tool in ("moto_server", "aws"):
            if not shutil.which(tool):
                raise Skip(f"n/a ({tool} not installed)")
        have_batch = all(os.path.exists(os.path.join(ROOT, p)) for p in
                         ("topology.d/10-aws-batch.yaml", "drivers/aws-batch"))
        moto = Moto(self)
        ids = moto.run_instances(n)
        files = {"50-bench.yaml": "static_nodes:\n" + "".join(
            f"  a{i + 1:03d}:\n    platform: aws\n    ec2_id: {iid}\n"
            for i, iid in enumerate(ids))}
        shipped = ["10-aws.yaml"]
        if have_batch:
            shipped.append("10-aws-batch.yaml")
            files["51-bench.yaml"] = "static_nodes:\n" + "".join(
                f"  ab{i + 1:03d}:\n    platform: aws-batch\n    ec2_id: {iid}\n"
                for i, iid in enumerate(ids))
        # At the default --concurrency of 50, 50 CLI starts (~0.6 s of CPU
        # each) share 2 cores: no faster, and under load some per-node runs
        # overran the platform's 90 s timeout. 8 keeps the cores busy.
        server = Server(self, "aws", files, env=moto.server_env(), shipped=shipped,
                        args=["--concurrency", "8"])
        server.start()
        batch = None
        if have_batch:
            batch, _ = median_of("power status (aws-batch)", min(self.runs, 3), 1,
                                 lambda: server.power("status", f"ab[001-{n}]",
                                                      expect={"On"}, count=n))
        # One warm-up node (the CLI's first start compiles its caches), then
        # one run: 200 CLI starts at ~0.5 s of CPU each take a minute.
        server.power("status", "a001", expect={"On"}, count=1)
        base, _ = median_of("power status (per-node aws)", 1, 0,
                            lambda: server.power("status", f"a[001-{n}]",
                                                 expect={"On"}, count=n))
        if have_batch:
            self.rows.append(Row("200 AWS instances status: aws-batch vs per-node aws",
                                 ms(batch), ms(base), f"{base / batch:.0f}x faster",
                                 ">= 20x faster", verdict(base / batch >= 20)))
        else:
            self.rows.append(Row("200 AWS instances status: aws-batch vs per-node aws",
                                 "n/a (platform missing)", ms(base), "-",
                                 ">= 20x faster", "n/a"))
        server.stop()

    # ---------------------------------------------------------------- health
    def group_health(self):
        """/healthz latency while a 10,000-node per-node job runs, and while
        10,000-node one-shot batch requests come back to back."""
        n = 10000
        log("== health: /healthz p99 during a 10,000-node per-node status")
        server = Server(self, "health", {"50-bench.yaml": sim_topology(n, both=True)})
        server.start()
        idle_ka, idle_new = probe_healthz(server.port, lambda i: i >= 2000)

        def status(nodes):
            """`power status NODES` in the background: the process, and a
            function that waits for it and checks its n rows, all Off."""
            job = self.procs.spawn("power status", [CLIENT, "status", nodes],
                                   env=server.client_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            out = {}
            reader = threading.Thread(
                target=lambda: out.update(zip(("out", "err"), job.communicate())))
            reader.start()

            def finish():
                reader.join()
                self.procs.stop(job)
                rows = [l for l in out["out"].splitlines() if l.strip()]
                if len(rows) != n or any(l.split()[1] != "Off" for l in rows):
                    raise RuntimeError(f"the background job failed: {out['err'][-800:]}")
            return job, finish

        job, finish = status(f"p[00001-{n}]")
        t = time.perf_counter()
        busy_ka, busy_new = probe_healthz(server.port, lambda i: job.poll() is not None)
        took = time.perf_counter() - t
        finish()
        # One-shot batch requests (40 chunks each) back to back for 8 s:
        # their chunks run on the engine's threads, not the API's.
        ended = threading.Event()
        requests = []

        def batch_loop():
            try:
                deadline = time.perf_counter() + 8
                while time.perf_counter() < deadline:
                    job, finish = status(f"b[00001-{n}]")
                    job.wait()
                    finish()
                    requests.append(1)
            finally:
                ended.set()
        looper = threading.Thread(target=batch_loop)
        looper.start()
        batch_ka, batch_new = probe_healthz(server.port, lambda i: ended.is_set())
        looper.join()
        if not requests:
            raise RuntimeError("no batch request finished")
        for label, s in (("idle, keep-alive", idle_ka), ("idle, new connection", idle_new),
                         ("busy, keep-alive", busy_ka), ("busy, new connection", busy_new),
                         ("batch requests, keep-alive", batch_ka),
                         ("batch requests, new connection", batch_new)):
            log(f"  /healthz {label}: {len(s)} GETs, p50 {pct(s, 50) * 1e3:.2f} ms, "
                f"p99 {pct(s, 99) * 1e3:.2f} ms, max {max(s) * 1e3:.2f} ms")
        log(f"  the per-node job took {ms(took)}; {len(requests)} batch requests in 8 s")
        p99 = pct(busy_ka, 99)
        self.rows.append(Row("/healthz p99 during 10k per-node job (keep-alive)",
                             f"{p99 * 1e3:.2f} ms", f"idle {pct(idle_ka, 99) * 1e3:.2f} ms",
                             f"{p99 / pct(idle_ka, 99):.1f}x", "< 5 ms", verdict(p99 < 0.005)))
        p99n = pct(busy_new, 99)
        self.rows.append(Row("/healthz p99 during 10k per-node job (new conn.)",
                             f"{p99n * 1e3:.2f} ms", f"idle {pct(idle_new, 99) * 1e3:.2f} ms",
                             f"{p99n / pct(idle_new, 99):.1f}x", "< 5 ms",
                             verdict(p99n < 0.005)))
        for kind, samples, idle in (("keep-alive", batch_ka, idle_ka),
                                    ("new conn.", batch_new, idle_new)):
            p = pct(samples, 99)
            self.rows.append(Row(f"  the same, 10k batch requests back to back ({kind})",
                                 f"{p * 1e3:.2f} ms", f"idle {pct(idle, 99) * 1e3:.2f} ms",
                                 f"{p / pct(idle, 99):.1f}x", "-", "-"))
        server.stop()

    # ---------------------------------------------------------------- scale
    def group_scale(self):
        """100,000 nodes, each with its own BMC address: load time, RSS,
        RSS after three reloads."""
        n = 100_000
        log("== scale: 100,000-node topology")
        big = Server(self, "scale", {"50-nodes.yaml": scale_topology(n)},
                     shipped=["10-ipmi.yaml"])
        small = Server(self, "scale-1", {"50-nodes.yaml": scale_topology(1)},
                       shipped=["10-ipmi.yaml"])
        # The same nodes with each platform written with an escape, which
        # the line-by-line reader leaves to the YAML parser: what a large
        # file outside the plain shape costs (docs/topology.md).
        escaped = Server(self, "scale-yaml", {"50-nodes.yaml": scale_topology(n).replace(
            "    platform: ipmi\n", '    platform: "ipm\\x69"\n')}, shipped=["10-ipmi.yaml"])
        size = os.path.getsize(os.path.join(big.topology, "50-nodes.yaml"))
        log(f"  topology: {n} nodes, {size / MiB:.1f} MiB of YAML")

        def check_time(s):
            return timed([SERVER, "check", *s.load_args()], s.env,
                         lambda rc, o, e: None if rc == 0 else "check failed")[0]
        chk, _ = median_of("power-server check, 100k nodes", 3, 1, lambda: check_time(big))
        chk1, _ = median_of("power-server check, 1 node", 3, 1, lambda: check_time(small))
        chky, _ = median_of("power-server check, 100k nodes read by the YAML parser "
                            "(each platform escaped)", 3, 1, lambda: check_time(escaped))

        start1 = small.start()
        rss1 = rss_kib(small.proc.pid)
        small.stop()
        start = big.start()
        pid = big.proc.pid
        rss0 = rss_kib(pid)
        hwm0 = rss_kib(pid, "VmHWM")
        log(f"  serve, 100k nodes: spawn to /healthz {ms(start)}, VmRSS {rss0 / 1024:.1f} MiB, "
            f"VmHWM {hwm0 / 1024:.1f} MiB (1 node: {ms(start1)}, {rss1 / 1024:.1f} MiB)")
        after = []
        for k in range(1, 4):
            t = time.perf_counter()
            os.kill(pid, signal.SIGHUP)
            poll(f"reload {k} in the log", 120,
                 lambda: True if big.reloads_seen() >= k else None)
            took = time.perf_counter() - t
            if "reload refused" in big.log():
                raise RuntimeError("a reload was refused:\n" + big.log()[-2000:])
            after.append(rss_kib(pid))
            log(f"  reload {k}: {ms(took)}, VmRSS {after[-1] / 1024:.1f} MiB")
        if not big.healthz():
            raise RuntimeError("the server stopped answering after the reloads")
        big.stop()
        self.rows.append(Row("100k topology: power-server check",
                             ms(chk), f"1 node {ms(chk1)}", "-", "< 0.5 s", verdict(chk < 0.5)))
        self.rows.append(Row("  the same, a file the YAML parser reads (escapes)",
                             ms(chky), f"plain {ms(chk)}", f"{chky / chk:.2f}x", "-", "-"))
        self.rows.append(Row("100k topology: serve start to /healthz",
                             ms(start), f"1 node {ms(start1)}", "-", "< 0.5 s",
                             verdict(start < 0.5)))
        self.rows.append(Row("100k topology: server VmRSS",
                             f"{rss0 / 1024:.1f} MiB", f"1 node {rss1 / 1024:.1f} MiB", "-",
                             "< 100 MiB", verdict(rss0 < 100 * 1024)))
        growth = after[-1] / rss0
        self.rows.append(Row("100k topology: VmRSS after 3 reloads (SIGHUP)",
                             f"{after[-1] / 1024:.1f} MiB", f"after load {rss0 / 1024:.1f} MiB",
                             f"{growth:.2f}x", "no growth (<= 1.05x)",
                             verdict(growth <= 1.05)))


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def probe_healthz(port, done):
    """Sequential GETs of /healthz, alternating one persistent (keep-alive)
    connection and a fresh connection per request, about one every 2 ms,
    until `done(i)`; the latencies of each kind, in seconds."""
    keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ka, new = [], []
    i = 0
    while not done(i):
        t = time.perf_counter()
        keep.request("GET", "/healthz")
        r = keep.getresponse()
        r.read()
        ka.append(time.perf_counter() - t)
        if r.status != 200:
            raise RuntimeError(f"/healthz answered {r.status}")
        t = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        c.close()
        new.append(time.perf_counter() - t)
        i += 1
        time.sleep(0.002)  # pacing, not synchronisation: leave the job its CPU
    keep.close()
    return ka, new


def sim_topology(n, both, persistent=False):
    """`n` nodes p* on a per-node sim platform; with `both`, `n` nodes b*
    on a batch one; with `persistent`, `n` nodes q* on a persistent batch
    one. Same driver, same variables."""
    text = ("platforms:\n"
            "  simp:\n    driver: sim\n    variables: [sim_initial]\n    timeout: 60s\n")
    if both:
        text += "  simb:\n    driver: sim\n    batch: true\n    variables: [sim_initial]\n" \
                "    timeout: 60s\n"
        # Bigger chunks: fewer process starts, as many as the cores can run.
        text += "  simk:\n    driver: sim\n    batch: true\n    batch_max: 1000\n" \
                "    variables: [sim_initial]\n    timeout: 60s\n"
    if persistent:
        text += "  simq:\n    driver: sim\n    batch: true\n    persistent: true\n" \
                "    variables: [sim_initial]\n    timeout: 60s\n"
    text += f"static_nodes:\n  p[00001-{n}]:\n    platform: simp\n"
    if both:
        text += f"  b[00001-{n}]:\n    platform: simb\n"
        text += f"  k[00001-{n}]:\n    platform: simk\n"
    if persistent:
        text += f"  q[00001-{n}]:\n    platform: simq\n"
    return text


def scale_topology(n):
    """`n` nodes of the shipped ipmi platform, one key each, each with its
    own BMC address (in 127.64.0.0/10: nothing is ever sent to them)."""
    out = ["static_nodes:\n"]
    for i in range(n):
        out.append(f"  cn{i + 1:06d}:\n    platform: ipmi\n"
                   f"    ipmi_host: 127.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}\n")
    return "".join(out)


def ipmipower_vars(addr, password):
    """The ipmipower platform's node variables for one simulated BMC
    (ipmi_sim needs the opensesspriv workaround)."""
    return IPMIPOWER_VARS.format(addr=addr, password=password)


IPMIPOWER_VARS = ("    ipmi_host: {addr}\n    ipmi_username: admin\n"
                  "    ipmi_password: {password}\n    ipmi_workaround: opensesspriv\n")


# --------------------------------------------------------------------------
# Endpoints: ipmi_sim BMCs and moto.

# The tests' chassis_control for ipmi_sim: CONTROL STATE EVENTS DEVICE get
# power | set power 0|1 ... (events go to /dev/null here).
CHASSIS_CONTROL = os.path.join(ROOT, "tests", "fixtures", "ipmi-chassis-control")
EMU_CMDS = os.path.join(ROOT, "tests", "fixtures", "ipmi-sim-emu.cmds")
with open(os.path.join(ROOT, "tests", "fixtures", "ipmi-sim-lan.conf")) as f:
    LAN_CONF = f.read()


def fill(template, **values):
    """`template` with each `{key}` replaced (as the tests fill it)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def udp_free(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def udp_hex(addr, port):
    a = socket.inet_aton(addr)
    return f"{int.from_bytes(a, 'little'):08X}:{port:04X}"


def start_bmcs(bench, n):
    """`n` ipmi_sim BMCs, all off, each on its own loopback address
    (127.0.1.2 upwards, skipping addresses whose port 623 is taken), port
    623; ready when one ipmipower call gets an answer from each."""
    root = os.path.join(bench.tmp, "bmcs")
    os.makedirs(root)
    control = os.path.join(root, "chassis-control")
    shutil.copyfile(CHASSIS_CONTROL, control)
    os.chmod(control, 0o755)
    password = "bp" + os.urandom(7).hex()  # 16 characters: the IPMI 1.5 limit
    bmcs, host = [], 2
    while len(bmcs) < n:
        if host > 254:
            raise RuntimeError("no free loopback addresses in 127.0.1.0/24 for the BMCs")
        addr = f"127.0.1.{host}"
        host += 1
        if not udp_free(addr, 623):
            continue
        i = len(bmcs)
        d = os.path.join(root, f"bmc{i}")
        os.makedirs(os.path.join(d, "persist"))
        state = os.path.join(d, "power")
        with open(state, "w") as f:
            f.write("0\n")
        # The same files as the tests' BMCs (tests/support/ipmi_sim.rs).
        with open(os.path.join(d, "lan.conf"), "w") as f:
            f.write(fill(LAN_CONF, name=f"bmc{i}", addr=addr, port="623", control=control,
                         state=state, events="/dev/null", password=password))
        shutil.copyfile(EMU_CMDS, os.path.join(d, "emu.cmds"))
        proc = bench.procs.spawn(
            "ipmi_sim", ["ipmi_sim", "-n", "-c", "lan.conf", "-f", "emu.cmds", "-s", "persist"],
            cwd=d, stdout=open(os.path.join(d, "log"), "w"), stderr=subprocess.STDOUT)
        bmcs.append({"addr": addr, "password": password, "proc": proc, "dir": d})

    def bound():
        for b in bmcs:
            if b["proc"].poll() is not None:
                raise RuntimeError(f"ipmi_sim at {b['addr']} exited:\n"
                                   + open(os.path.join(b["dir"], "log")).read()[-2000:])
        with open("/proc/net/udp") as f:
            table = {l.split()[1] for l in f.readlines()[1:]}
        return True if all(udp_hex(b["addr"], 623) in table for b in bmcs) else None
    poll("the BMCs' UDP sockets", 30, bound)
    conf = os.path.join(root, "freeipmi.conf")
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, f"username admin\npassword {password}\n".encode())
    os.close(fd)

    def answer():
        r = subprocess.run(["ipmipower", "-D", "LAN_2_0", "--config-file", conf, "-W",
                            "opensesspriv", "-h", ",".join(b["addr"] for b in bmcs), "--stat"],
                           capture_output=True, text=True)
        return True if len(re.findall(r": off$", r.stdout, re.M)) == n else None
    poll("every BMC to answer ipmipower --stat", 30, answer)
    log(f"  {n} BMCs up at {bmcs[0]['addr']}..{bmcs[-1]['addr']} port 623")
    return bmcs


class Moto:
    """moto_server on 127.0.0.1 with a private HOME and AWS config."""

    def __init__(self, bench):
        self.dir = os.path.join(bench.tmp, "moto")
        os.makedirs(os.path.join(self.dir, "home"))
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write("[default]\nregion = us-east-1\n")
        open(os.path.join(self.dir, "credentials"), "w").close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.dir, "moto.log")
        self.proc = bench.procs.spawn(
            "moto_server", ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited:\n" + open(self.log_path).read()[-2000:])
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/moto-api/")
                c.getresponse().read()
                return True
            except OSError:
                return None
        poll("moto_server", 60, up)

    def server_env(self):
        d = self.dir
        return {
            "HOME": os.path.join(d, "home"),
            "AWS_CONFIG_FILE": os.path.join(d, "config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(d, "credentials"),
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "", "AWS_ENDPOINT_URL": self.url,
        }

    def run_instances(self, n):
        r = subprocess.run(
            ["aws", "ec2", "run-instances", "--image-id", "ami-1e749f67", "--count", str(n),
             "--instance-type", "t2.micro", "--endpoint-url", self.url, "--output", "json"],
            env=clean_env(**self.server_env()), capture_output=True, text=True, check=True)
        ids = [i["InstanceId"] for i in json.loads(r.stdout)["Instances"]]
        if len(ids) != n:
            raise RuntimeError(f"moto made {len(ids)} instances, not {n}")
        log(f"  moto at {self.url}: {n} instances running")
        return ids


# --------------------------------------------------------------------------
# The environment and the table.


def environment(state_dir):
    def out(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    os_name = "?"
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)', f.read(), re.M)
            os_name = m.group(1) if m else "?"
    try:
        import moto
        moto_v = moto.__version__
    except ImportError:
        moto_v = out(["moto_server", "--help"]) and "installed (version unknown)"
    commit = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return [
        ("date", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("cpu", f"{os.cpu_count()} cores, {model}"),
        ("memory", f"{mem} MiB"),
        ("load average", loadavg() + " (1, 5, 15 min) at the start"),
        ("sim state", f"{state_dir} ({fs_type(state_dir)})"),
        ("os", f"{os_name}, Linux {platform.release()}"),
        ("checkout", f"{commit}{' (modified)' if dirty else ''}"),
        ("power-server", out([SERVER, "--version"])),
        ("rustc", out(["rustc", "--version"])),
        ("powerman", "powermand " + out(["powermand", "-V"])),
        ("freeipmi", out(["ipmipower", "--version"])),
        ("openipmi", ipmi_sim_version()),
        ("ipmitool", out(["ipmitool", "-V"])),
        ("moto", moto_v),
        ("aws cli", out(["aws", "--version"])),
        ("python", platform.python_version()),
    ]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def fs_type(path):
    """The file system type of the mount holding `path`."""
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            mount, fstype = line.split()[1:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def ipmi_sim_version():
    try:
        r = subprocess.run(["ipmi_sim", "--version"], capture_output=True, text=True,
                           timeout=10, cwd=tempfile.gettempdir())
        m = re.search(r"version (\S+)", r.stdout + r.stderr)
        return "ipmi_sim " + m.group(1) if m else "ipmi_sim (version unknown)"
    except OSError:
        return "not installed"


def print_table(rows):
    head = ["benchmark", "this server", "baseline", "ratio", "target", "result"]
    cells = [head] + [r.cells for r in rows]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(head))]
    sep = "  "
    for i, c in enumerate(cells):
        print(sep.join(str(v).ljust(w) for v, w in zip(c, widths)).rstrip())
        if i == 0:
            print(sep.join("-" * w for w in widths))


def main():
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Benchmarks against their baselines, in one table.")
    parser.add_argument("groups", nargs="*", metavar="GROUP",
                        help=f"which rows to run: {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "31")),
                        help="timed runs per fast measurement, after one warm-up (default 31)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp directory (logs, configs) and print its path")
    args = parser.parse_args()
    groups = args.groups or GROUPS
    for g in groups:
        if g not in GROUPS:
            parser.error(f"unknown group {g!r}: expected some of {', '.join(GROUPS)}")
    for b in (SERVER, CLIENT):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench: {b} is missing: build with "
                     "scripts/build-release (bench/run does)")

    def interrupted(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, interrupted)
    # Also when started in the background by a shell, which ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, interrupted)

    t0 = float(os.environ.get("BENCH_T0", time.time()))
    bench = Bench(args)
    failed = False
    try:
        for k, v in environment(bench.state):
            print(f"{k + ':':<14}{v}")
        print(f"{'runs:':<14}median of {args.runs} after 1 warm-up (slow baselines: 1 run); "
              "wall clock of the whole client command")
        print(flush=True)
        for g in groups:
            t = time.time()
            log(f"[{g}: load average {loadavg()}]")
            try:
                getattr(bench, "group_" + g)()
            except Skip as e:
                log(f"  skipped: {e}")
                bench.rows.append(Row(f"{g}", str(e), "-", "-", "-", "n/a"))
            except (Exception, subprocess.CalledProcessError) as e:
                failed = True
                log(f"  FAILED: {e}")
                bench.rows.append(Row(f"{g}", f"failed: {str(e).splitlines()[0][:60]}",
                                      "-", "-", "-", "fail"))
            finally:
                # A failed group may leave its servers and endpoints up.
                bench.procs.stop_all()
            log(f"  ({g}: {time.time() - t:.1f} s)")
        print()
        print_table(bench.rows)
        print(f"\ntotal wall time {time.time() - t0:.0f} s")
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\nbench: interrupted ({str(e) or 'SIGINT'}), cleaning up", file=sys.stderr)
        failed = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.procs.stop_all()
        if args.keep:
            print(f"bench: kept {bench.tmp} (sim state removed)", file=sys.stderr)
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
        shutil.rmtree(bench.state, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
