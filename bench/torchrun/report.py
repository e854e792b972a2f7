#!/usr/bin/python3
"""Tables of the side-by-side benchmark from its JSON lines.

Usage: report.py ROUND_FILE... > table.md

Each file holds one round: the lines bench/recovery:faults --json and
torchrun_bench.py --json wrote during it, Tardigrade's and torchrun's
measured back to back. For every figure the table gives each system's
median (min-max) over the rounds and the median over the rounds of the
ratio Tardigrade / torchrun taken within each round (below 1: Tardigrade
is faster; for goodput above 1: Tardigrade keeps more of the time).
"""

import json
import statistics
import sys


def measured(kind, run):
    """The lines of one kind of fault from one kind of run."""
    return lambda r: r["kind"] == kind and r.get("run") == run


# (row, Tardigrade's lines, torchrun's lines): which measurement each side of a row is.
ROWS = [
    ("worker crash (SIGKILL one worker)", measured("trainer_crash", "timeline"), measured("trainer_crash", "timeline")),
    ("node loss (SIGKILL a node's agent and workers; 8 -> 6 ranks)", measured("node_loss_shrink", "timeline"),
     measured("node_loss_shrink", "timeline")),
    ("hang (SIGSTOP one worker), default settings", measured("hang", "timeline"), measured("hang", "hang_default")),
    ("hang, tuned", measured("hang", "fresh"), measured("hang", "timeline")),
]
FIGURES = [("detected_ms", "detected", "ms"), ("resumed_ms", "training resumed", "ms"),
           ("steps_lost", "steps lost", "")]


def load(paths):
    rounds = []
    for p in paths:
        with open(p) as f:
            rounds.append([json.loads(line) for line in f if line.strip()])
    return rounds


def pick(lines, system, match):
    return [r for r in lines if r.get("system") == system and match(r)]


def median(xs):
    return statistics.median(xs) if xs else None


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "ms":
        return "%.2f s" % (v / 1000) if v >= 1000 else "%.0f ms" % v
    if unit == "%":
        return "%.1f %%" % (v * 100)
    return "%g" % round(v, 1)


def spread(xs, unit):
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt(xs[0], unit)
    return "%s (%s-%s)" % (fmt(median(xs), unit), fmt(min(xs), unit), fmt(max(xs), unit))


def per_round(rounds, system, match, key):
    """One value per round (the median when a round measured it more than once), or None."""
    out = []
    for lines in rounds:
        vs = [r[key] for r in pick(lines, system, match) if r.get(key) is not None and r.get("recovered", True)]
        out.append(median(vs))
    return out


def unrecovered(rounds, system, match):
    return [r for lines in rounds for r in pick(lines, system, match) if not r.get("recovered", True)]


def ratio_cell(t, p, key):
    ratios = [a / b for a, b in zip(t, p) if a is not None and b not in (None, 0)]
    if not ratios:
        return "-"
    return "%.3f" % median(ratios) + (" (%d rounds)" % len(ratios) if len(ratios) > 1 else "")


def table(rounds):
    out = ["| fault | figure | Tardigrade | torchrun | Tardigrade / torchrun |", "| --- | --- | ---: | ---: | ---: |"]
    for name, tmatch, pmatch in ROWS:
        for key, label, unit in FIGURES:
            t = per_round(rounds, "tardigrade", tmatch, key)
            p = per_round(rounds, "torchrun", pmatch, key)
            pcell = spread([v for v in p if v is not None], unit)
            missed = unrecovered(rounds, "torchrun", pmatch)
            if missed and key != "detected_ms":
                capped = [r.get("capped_s") for r in missed if r.get("capped_s")]
                pcell = ("not resumed in %d of %d" % (len(missed), len(missed) + len([v for v in p if v is not None]))
                         + (" (watched %d s)" % max(capped) if capped else ""))
                if capped and key == "resumed_ms":
                    pcell = "> %d s, not waited (timeout %d s)" % (max(capped), missed[0]["hang_timeout_s"])
                    tm = median([v for v in t if v is not None])
                    out.append("| %s | %s | %s | %s | < %.4f |" % (name, label, spread([v for v in t if v is not None],
                                                                                    unit), pcell, tm / (max(capped) * 1000)))
                    continue
            out.append("| %s | %s | %s | %s | %s |" % (name, label, spread([v for v in t if v is not None], unit),
                                                       pcell, ratio_cell(t, p, key) if key != "steps_lost" else "-"))
    t = per_round(rounds, "tardigrade", lambda r: r["kind"] == "goodput", "goodput")
    p = per_round(rounds, "torchrun", lambda r: r["kind"] == "goodput", "goodput")
    g = next((r for lines in rounds for r in lines if r["kind"] == "goodput"), None)
    name = "goodput, a fault every %g s (%d in turn)" % (g["fault_every_s"], g["faults"]) if g else "goodput"
    out.append("| %s | progress / fault-free progress | %s | %s | %s |" % (
        name, spread([v for v in t if v is not None], "%"), spread([v for v in p if v is not None], "%"),
        ratio_cell(t, p, "goodput")))
    ts = per_round(rounds, "tardigrade", lambda r: r["kind"] == "goodput", "ideal_step_ms")
    ps = per_round(rounds, "torchrun", lambda r: r["kind"] == "goodput", "ideal_step_ms")
    out.append("| (fault-free step time: the median step gap in that window) | | %s | %s | %s |" % (
        spread([v for v in ts if v is not None], "ms"), spread([v for v in ps if v is not None], "ms"),
        ratio_cell(ts, ps, "ideal_step_ms")))
    return "\n".join(out)


def settings(rounds):
    t = next((r for lines in rounds for r in lines if r.get("system") == "tardigrade" and r.get("run") == "fresh"), {})
    tl = next((r for lines in rounds for r in lines if r.get("system") == "tardigrade" and r.get("run") == "timeline"),
              {})
    p = next((r for lines in rounds for r in lines if r.get("system") == "torchrun" and r.get("run") == "timeline"), {})
    return ("Settings: Tardigrade hang floor %s ms (default) and %s ms (tuned), heartbeat timeout %s ms; torchrun "
            "collective timeout 1800 s (PyTorch's default) and %s s (tuned)." % (
                tl.get("hang_floor_ms", "?"), t.get("hang_floor_ms", "?"), tl.get("heartbeat_timeout_ms", "?"),
                p.get("hang_timeout_s", "?")))


def raw(rounds):
    out = []
    for i, lines in enumerate(rounds, 1):
        out.append("round %d:" % i)
        for r in lines:
            keep = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()
                    if k not in ("system", "round", "world_before")}
            out.append("  %-10s %s" % (r.get("system"), json.dumps(keep, sort_keys=True)))
    return "\n".join(out)


def main(paths):
    rounds = load(paths)
    host = [r for lines in rounds for r in lines if r["kind"] == "host_loss"]
    print(table(rounds))
    print()
    print(settings(rounds))
    for r in host:
        print("\ntorchrun, the c10d store's host (n0) killed: training %s within %d s; agents still running after it: %s;"
              " first error line: `%s`" % ("resumed" if r["recovered"] else "did not resume", r["watched_s"],
                                           sorted(n for n, rc in r["exit_codes"].items() if rc is None) or "none",
                                           r["first_error"][:200]))
    print("\n<details><summary>every measurement</summary>\n\n```\n%s\n```\n</details>" % raw(rounds))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
