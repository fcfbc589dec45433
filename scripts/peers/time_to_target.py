#!/usr/bin/env python3
"""Runs one training command and measures, from its start, the wall time and
env steps until the mean return over the last N (default 100) episodes
reaches a target.

    time_to_target.py --run NAME --seed N --target T [--window N] [--limit S] --out FILE -- CMD...

It reads the command's stdout as it comes, in any of four forms:
  `episode return=R steps=S`              one finished episode (the scripts in peers/)
  `iter N  env steps S  return mean R`    `oxray train`'s progress line (a mean over its
                                          `reporting.metrics_num_episodes_for_smoothing`)
  `evaluation return mean=R steps=S`      an offline peer's evaluation after an iteration
                                          (S: recorded transitions trained on)
  `iter N  recorded steps trained S ... evaluation return mean R`
                                          `oxray train`'s progress line for an offline run
An evaluation's mean is already a mean: use --window 1 for those.
The clock starts before the process does, so interpreter start, imports and
setup count for every framework alike. After the target the command gets
30 s to stop by itself (they all do), then SIGINT; after --limit seconds
it is stopped unsolved. Appends one JSON line {run, seed, solved, steps, wall_s, steps_per_s}
to FILE; unsolved runs report their last step count and wall time.
"""
import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque

EPISODE = re.compile(r"^episode return=(\S+) steps=(\d+)")
MEAN = re.compile(r"^iter\s+\d+\s+env steps\s+(\d+)\s+return mean\s+(\S+)")
EVALUATION = re.compile(
    r"^(?:evaluation return mean=(?P<peer>\S+) steps=(?P<peer_steps>\d+)"
    r"|iter\s+\d+\s+recorded steps trained\s+(?P<steps>\d+)\s.*"
    r"evaluation return mean\s+(?P<mean>\S+))")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--target", type=float, required=True)
    ap.add_argument("--window", type=int, default=100,
                    help="episodes the mean is over (for `episode return=` lines)")
    ap.add_argument("--limit", type=float, default=600.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", help="copy the command's output here")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command given")

    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    # Lines come through a queue so that neither a silent command nor a
    # grandchild holding the pipe open can keep the loop past its deadline.
    lines = queue.Queue()
    threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
    deadline = start + a.limit
    log = open(a.log, "w", buffering=1) if a.log else None  # line by line, to follow it
    window = deque(maxlen=a.window)
    solved, steps, wall = False, 0, 0.0
    while True:
        if time.monotonic() > deadline:
            break
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line is None:
            break
        if log:
            log.write(line)
        if solved:
            continue
        if m := EPISODE.match(line):
            window.append(float(m.group(1)))
            steps, mean = int(m.group(2)), sum(window) / len(window)
            full = len(window) == window.maxlen
        elif (m := MEAN.match(line)) or (m := EVALUATION.match(line)):
            if m.re is MEAN:
                steps, text = int(m.group(1)), m.group(2)
            else:
                steps = int(m.group("peer_steps") or m.group("steps"))
                text = m.group("peer") or m.group("mean")
            full = text not in ("-", "nan")
            mean = float(text) if full else float("nan")
        else:
            continue
        wall = time.monotonic() - start
        if full and mean >= a.target:
            solved = True
            # The command stops itself at the target; give it time to exit.
            deadline = min(deadline, time.monotonic() + 30)
    if not solved:
        wall = time.monotonic() - start
    stop(proc)
    if log:
        log.close()
    result = {"run": a.run, "seed": a.seed, "solved": solved, "steps": steps,
              "wall_s": round(wall, 2), "steps_per_s": round(steps / wall, 1) if wall > 0 else 0.0}
    with open(a.out, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"{a.run:<16} seed {a.seed}: {'solved' if solved else 'UNSOLVED'} at {steps} env steps, "
          f"{wall:.1f} s", file=sys.stderr)


def pump(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


def stop(proc):
    """SIGINT lets a running command shut down (Python peers stop Ray); what
    is left of its process group 20 s later is killed."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group is gone
    proc.wait()


if __name__ == "__main__":
    main()
