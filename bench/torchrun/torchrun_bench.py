#!/usr/bin/python3
"""The torchrun half of the side-by-side benchmark (bench/torchrun/README.md).

Runs train.py (tg-train's workload in PyTorch) under torchrun from
Debian's python3-torch on a local cluster like bench/recovery:faults':
4 torchrun agents ("nodes" n0..n3) x 2 workers on loopback, c10d
rendezvous (`--nnodes=3:4`, the store hosted by n0's agent), gloo, a disk
checkpoint every --ckpt-every steps. It injects the same faults with the
same protocol as faults_bench.c's goodput kind, and measures them from the
logs (every line of train.py and of the agents carries its wall-clock ms):

  timeline     one job: train to --fault-step, --baseline-s of fault-free
               training (reported), then every --fault-every-s
               one fault in turn: trainer_crash (SIGKILL n1's local rank 1),
               hang (SIGSTOP it; the collective timeout is --hang-timeout-s),
               node_loss_shrink (SIGKILL n2's agent and workers: 8 -> 6
               ranks; the node is started again once training resumed, if
               more faults follow). Goodput = steps of progress over the
               window of --goodput-faults faults x the fault-free step time
               (the median gap between step lines in the window) / the
               window. With --host-loss, n0 (the store's host) is then
               killed and what follows is recorded for --cap-s.
  hang_default one job with PyTorch's default collective timeout (30 min):
               SIGSTOP a worker at --fault-step and watch for --cap-s.

Per fault: detected = the first agent log line that reacts to it (a worker
"failed (exitcode", "Worker group FAILED/UNHEALTHY", "closing signal", new
nodes seen); restarted = the first worker started after it; resumed = the
first step logged by a worker started after the fault; steps lost = the
newest step logged before the fault minus the step the workers resumed at
(that of the last checkpoint). One JSON line per fault and per goodput
round goes to --json, for report.py.

Every process it starts is in a session of its own (one per agent, with
its workers) and is killed on every exit path, including SIGINT/SIGTERM.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"  # Debian's, which has python3-torch (a pyenv python may shadow it)
NODES, SLOTS = 4, 2
POLL_S = 0.02
DETECT = re.compile(r"failed \(exitcode|Worker group (FAILED|UNHEALTHY)|new nodes from group_rank|closing signal")
EVENT = re.compile(r"^(\d{13}) (n\d)/(\d) pid (\d+) (.*)$")
STAMPED = re.compile(r"^(\d{13}) ")


def now_ms():
    return int(time.time() * 1000)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failure(Exception):
    pass


class Tail:
    """A file read as it grows, line by line."""

    def __init__(self, path):
        self.path, self.f, self.rest = path, None, ""

    def lines(self):
        if self.f is None:
            if not os.path.exists(self.path):
                return []
            self.f = open(self.path, "r", errors="replace")
        data = self.rest + self.f.read()
        parts = data.split("\n")
        self.rest = parts.pop()
        return parts


class Cluster:
    """4 torchrun agents x 2 workers of train.py; n0 hosts the c10d store."""

    def __init__(self, a, name, timeout_s):
        self.a, self.dir = a, tempfile.mkdtemp(prefix="tr-%s-" % name, dir=a.workdir)
        self.port, self.run_id, self.timeout_s = free_port(), "bench-%d-%s" % (os.getpid(), name), timeout_s
        self.events_path = os.path.join(self.dir, "events.log")
        self.events = Tail(self.events_path)
        self.agents, self.agent_logs, self.stopped = {}, {}, []
        self.steps = []          # (ms, step) of every step line, in order
        self.workers = {}        # (node, slot) -> (pid, started ms) of the newest worker
        self.resumes = []        # (ms, pid, rank, world, step)
        self.started = []        # (ms, pid) of every worker start
        self.agent_lines = []    # (ms, node, text) of every stamped agent line

    def start_agent(self, node):
        log = open(os.path.join(self.dir, "agent-%s.log" % node), "a")
        argv = [PYTHON, os.path.join(HERE, "launch.py"), "--nnodes=3:%d" % NODES, "--nproc_per_node=%d" % SLOTS,
                "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:%d" % self.port, "--rdzv_id=" + self.run_id,
                "--rdzv_conf=is_host=%d" % (node == "n0"), "--max_restarts=%d" % self.a.max_restarts,
                "--monitor_interval=%g" % self.a.monitor_interval,
                # Debian's torch 1.13 on Python 3.11: --redirects/--tee "0" (the defaults) parse to None and
                # every agent dies starting its workers; 1 and 2 parse (see README.md).
                "--redirects=1", "--tee=2", "--log_dir=" + os.path.join(self.dir, "elastic-" + node),
                os.path.join(HERE, "train.py"), "--steps=%d" % self.a.steps, "--ckpt-every=%d" % self.a.ckpt_every,
                "--timeout-s=%g" % self.timeout_s, "--ckpt=" + os.path.join(self.dir, "ckpt.pt"),
                "--log=" + self.events_path]
        env = dict(os.environ, BENCH_NODE=node, LOGLEVEL="INFO", PYTHONUNBUFFERED="1")
        self.agents[node] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
        log.close()
        self.agent_logs.setdefault(node, Tail(os.path.join(self.dir, "agent-%s.log" % node)))

    def start(self):
        self.start_agent("n0")
        deadline = time.time() + 60
        while not self.store_up():  # the others would try to host it themselves
            if time.time() > deadline or self.agents["n0"].poll() is not None:
                raise Failure("n0's agent did not open the c10d store on port %d" % self.port)
            time.sleep(0.05)
        for i in range(1, NODES):
            self.start_agent("n%d" % i)

    def store_up(self):
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def poll(self):
        for line in self.events.lines():
            m = EVENT.match(line)
            if not m:
                continue
            ms, node, slot, pid, text = int(m[1]), m[2], int(m[3]), int(m[4]), m[5]
            if text.startswith("started"):
                self.workers[(node, slot)] = (pid, ms)
                self.started.append((ms, pid))
            elif text.startswith("step "):
                self.steps.append((ms, int(text.split()[1])))
            else:
                r = re.match(r"rank (\d+) of (\d+): \w+ at step (\d+)", text)
                if r:
                    self.resumes.append((ms, pid, int(r[1]), int(r[2]), int(r[3])))
        for node, tail in self.agent_logs.items():
            for line in tail.lines():
                m = STAMPED.match(line)
                if m:
                    self.agent_lines.append((int(m[1]), node, line[14:]))

    def latest_step(self):
        return self.steps[-1] if self.steps else (0, 0)

    def wait(self, ready, deadline_s, what):
        end = time.time() + deadline_s
        while True:
            self.poll()
            got = ready()
            if got:
                return got
            if time.time() > end:
                raise Failure("no %s within %.0f s" % (what, deadline_s))
            for node, p in self.agents.items():
                if p.poll() is not None and node not in self.lost:
                    raise Failure("torchrun agent %s exited (%s) while waiting for %s" % (node, p.returncode, what))
            time.sleep(POLL_S)

    lost = ()

    def kill_node(self, node):
        os.killpg(self.agents[node].pid, signal.SIGKILL)  # the agent and its workers: one session
        self.agents[node].wait()
        self.lost = tuple(self.lost) + (node,)

    def free(self):
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for p in self.agents.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        if not self.a.keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)


def write_json(a, obj):
    if a.json:
        obj["system"] = "torchrun"
        with open(a.json, "a") as f:
            f.write(json.dumps(obj) + "\n")


def inject(c, kind):
    """The fault; returns its instant (unix ms, taken just before)."""
    if kind == "node_loss_shrink":
        t0 = now_ms()
        c.kill_node("n2")
        return t0
    pid = c.workers[("n1", 1)][0]
    t0 = now_ms()
    if kind == "trainer_crash":
        os.kill(pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGSTOP)
        c.stopped.append(pid)
    return t0


def measure(c, kind, t0, wait_s):
    """Waits (up to wait_s) for training to resume after the fault at t0;
    the figures, times in ms from t0 (None: not seen)."""
    c.poll()
    last = max([s for ms, s in c.steps if ms <= t0] or [0])

    def resumed():
        new = {pid for ms, pid in c.started if ms > t0}
        for ms, pid, rank, world, step in c.resumes:
            if ms > t0 and pid in new:
                after = [m for m, s in c.steps if m > ms]
                if after:
                    return ms, step, world, after[0]
        return None

    try:
        joined_ms, step, world, first_step_ms = c.wait(resumed, wait_s, "step after the %s" % kind)
    except Failure:
        joined_ms = step = world = first_step_ms = None
    c.poll()
    det = [ms for ms, node, text in c.agent_lines if ms >= t0 and DETECT.search(text)]
    restarted = [ms for ms, pid in c.started if ms > t0]
    rel = lambda ms: ms - t0 if ms is not None else None  # noqa: E731
    return {"kind": kind, "recovered": first_step_ms is not None, "detected_ms": rel(min(det)) if det else None,
            "restarted_ms": rel(min(restarted)) if restarted else None, "joined_ms": rel(joined_ms),
            "resumed_ms": rel(first_step_ms), "last_step": last, "resume_step": step,
            "steps_lost": last - step if step is not None else None, "world_before": NODES * SLOTS,
            "world_after": world}


def show(r, label):
    f = lambda v: "-" if v is None else str(v)  # noqa: E731
    print("  %s: %s detected %s ms, workers restarted %s ms, resumed at step %s (%s lost) %s ms, world %s -> %s"
          % (label, r["kind"], f(r["detected_ms"]), f(r["restarted_ms"]), f(r["resume_step"]), f(r["steps_lost"]),
             f(r["resumed_ms"]), r["world_before"], f(r["world_after"])), flush=True)


def until(c, at_s):
    c.wait(lambda: time.time() >= at_s, max(at_s - time.time(), 0) + 5, "the next instant on the clock")


def timeline(a, rnd):
    rotation = ["trainer_crash", "hang", "node_loss_shrink"]
    c = Cluster(a, "timeline-%d" % rnd, a.hang_timeout_s)
    try:
        c.start()
        c.wait(lambda: c.latest_step()[1] >= a.fault_step, a.timeout_s, "training to reach --fault-step")
        t_a, s_a = c.latest_step()
        until(c, time.time() + a.baseline_s)
        t_b, s_b = c.latest_step()
        ideal_ms = (t_b - t_a) / (s_b - s_a)
        print("  round %d: baseline %d steps in %d ms: %.1f ms a step" % (rnd, s_b - s_a, t_b - t_a, ideal_ms),
              flush=True)
        w0 = time.time()
        s_w0 = c.latest_step()[1]
        for i in range(a.goodput_faults):
            until(c, w0 + i * a.fault_every_s)
            kind = rotation[i % 3]
            print("  fault %d of round %d at +%.1f s: %s" % (i + 1, rnd, time.time() - w0, kind), flush=True)
            t0 = inject(c, kind)
            # The next fault is due at its time whatever happens: wait for this one until then at most.
            r = measure(c, kind, t0, max(w0 + (i + 1) * a.fault_every_s - time.time(), 1))
            r.update(run="timeline", round=rnd, hang_timeout_s=a.hang_timeout_s)
            show(r, "round %d" % rnd)
            write_json(a, r)
            if kind == "node_loss_shrink" and i + 1 < a.goodput_faults and r["recovered"]:
                c.wait(lambda: c.latest_step()[1] >= r["resume_step"] + 5, a.timeout_s, "5 steps at 6 ranks")
                t1 = now_ms()
                c.start_agent("n2")
                c.lost = tuple(n for n in c.lost if n != "n2")
                g = measure(c, "grow", t1, max(w0 + (i + 1) * a.fault_every_s - time.time(), 1))
                print("    grow back: n2 started again: workers restarted %s ms, resumed %s ms at %s ranks (%s lost)"
                      % (g["restarted_ms"], g["resumed_ms"], g["world_after"], g["steps_lost"]), flush=True)
        w1 = w0 + a.goodput_faults * a.fault_every_s
        until(c, w1)
        c.poll()
        s_w1 = max([0] + [s for ms, s in c.steps if ms <= w1 * 1000][-1:])
        progress = max(s_w1 - s_w0, 0)
        # The fault-free step time: the median gap between step lines in the window itself (the faults'
        # few long gaps do not move it), taken under the same load as the faults; faults_bench.c does the same.
        window = [ms for ms, s in c.steps if w0 * 1000 <= ms <= w1 * 1000]
        baseline_ms, ideal_ms = ideal_ms, statistics.median(b - a for a, b in zip(window, window[1:]))
        goodput = progress * ideal_ms / ((w1 - w0) * 1000)
        print("  round %d: %d steps of progress in %.0f s (step %d -> %d); fault-free: %.0f; goodput %.1f %%"
              % (rnd, progress, w1 - w0, s_w0, s_w1, (w1 - w0) * 1000 / ideal_ms, goodput * 100), flush=True)
        write_json(a, {"kind": "goodput", "round": rnd, "faults": a.goodput_faults, "fault_every_s": a.fault_every_s,
                       "ideal_step_ms": ideal_ms, "baseline_step_ms": baseline_ms, "window_ms": (w1 - w0) * 1000, "progress_steps": progress,
                       "goodput": goodput, "hang_timeout_s": a.hang_timeout_s})
        if a.host_loss:
            host_loss(a, c, rnd)
    finally:
        c.free()


def host_loss(a, c, rnd):
    """Kills n0, whose agent hosts the c10d store, and records what follows."""
    c.poll()
    t0 = now_ms()
    c.kill_node("n0")
    end = time.time() + a.cap_s
    while time.time() < end and any(p.poll() is None for n, p in c.agents.items() if n not in c.lost):
        c.poll()
        time.sleep(POLL_S)
    c.poll()
    steps_after = [s for ms, s in c.steps if ms > t0 + 1000]
    exits = {n: p.poll() for n, p in c.agents.items() if n not in c.lost}
    exited_ms = [ms - t0 for ms, node, text in c.agent_lines if ms >= t0 and "Error" in text]
    first = next((text for ms, node, text in c.agent_lines if ms >= t0 and ("rror" in text or "failed" in text)), "")
    r = {"kind": "host_loss", "run": "timeline", "round": rnd, "recovered": bool(steps_after),
         "agents_exited": sorted(n for n, rc in exits.items() if rc is not None),
         "exit_codes": {n: rc for n, rc in exits.items()}, "watched_s": a.cap_s,
         "first_error_ms": min(exited_ms) if exited_ms else None, "first_error": first[:300]}
    print("  round %d: host_loss (n0, the c10d store's host): training %s within %d s; agents exited: %s; first: %s"
          % (rnd, "resumed" if steps_after else "did not resume", a.cap_s, r["exit_codes"], first[:160]), flush=True)
    write_json(a, r)


def hang_default(a, rnd):
    c = Cluster(a, "hang-default-%d" % rnd, 1800)
    try:
        c.start()
        c.wait(lambda: c.latest_step()[1] >= a.fault_step, a.timeout_s, "training to reach --fault-step")
        t0 = inject(c, "hang")
        r = measure(c, "hang", t0, a.cap_s)
        r.update(run="hang_default", round=rnd, hang_timeout_s=1800, capped_s=a.cap_s)
        show(r, "round %d (PyTorch's default timeout, watched %d s)" % (rnd, a.cap_s))
        write_json(a, r)
    finally:
        c.free()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["timeline", "hang_default"])
    p.add_argument("--round", type=int, default=1, help="the round number written to --json")
    p.add_argument("--fault-step", type=int, default=50, help="train to this step before anything else")
    p.add_argument("--baseline-s", type=float, default=15)
    p.add_argument("--fault-every-s", type=float, default=90)
    p.add_argument("--goodput-faults", type=int, default=3)
    p.add_argument("--hang-timeout-s", type=float, default=10, help="the timeline's collective timeout (tuned)")
    p.add_argument("--cap-s", type=int, default=60, help="how long hang_default and --host-loss watch")
    p.add_argument("--host-loss", action="store_true", help="after the timeline, kill the store's host n0")
    p.add_argument("--monitor-interval", type=float, default=5, help="torchrun's --monitor_interval (its default)")
    p.add_argument("--max-restarts", type=int, default=100)
    p.add_argument("--ckpt-every", type=int, default=20)
    p.add_argument("--steps", type=int, default=1000000, help="train.py --steps (the run stops on a clock)")
    p.add_argument("--timeout-s", type=float, default=300, help="deadline of the waits before the faults")
    p.add_argument("--workdir", default=None, help="where each job's directory goes (default: $TMPDIR)")
    p.add_argument("--json", help="append one JSON line per fault and goodput round")
    p.add_argument("--keep-logs", action="store_true")
    a = p.parse_args()

    def on_signal(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        timeline(a, a.round) if a.mode == "timeline" else hang_default(a, a.round)
    except Failure as e:
        print("torchrun_bench: %s round %d FAILED: %s" % (a.mode, a.round, e), file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
