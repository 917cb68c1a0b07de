#!/usr/bin/env python3
"""Run a command; print its wall time and memory as JSON.

peak_rss_mb is the largest resident set of any one process of the command
(the run or one of its workers). peak_total_pss_mb is the peak of the sum
over the whole process tree of each process's proportional set size, so
pages the processes share (mapped enrichment tables, libpython) count
once, split among them: the memory the command really needs.
per_process_peak_pss_mb lists each process's own peak.
"""
import json
import os
import resource
import subprocess
import sys
import threading
import time


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
peak_total = 0
per_pid = {}
done = threading.Event()


def sample():
    global peak_total
    while not done.is_set():
        tree, todo = [], [proc.pid]
        while todo:
            p = todo.pop()
            tree.append(p)
            todo.extend(children(p))
        sizes = {p: pss_kb(p) for p in tree}
        peak_total = max(peak_total, sum(sizes.values()))
        for p, kb in sizes.items():
            per_pid[p] = max(per_pid.get(p, 0), kb)
        done.wait(0.05)


t = threading.Thread(target=sample, daemon=True)
t.start()
code = proc.wait()
done.set()
t.join()
wall = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({
    "seconds": round(wall, 3),
    "peak_rss_mb": round(peak_kb / 1024, 1),
    "peak_total_pss_mb": round(peak_total / 1024, 1),
    "per_process_peak_pss_mb": sorted((round(v / 1024, 1) for v in per_pid.values()), reverse=True),
    "exit": code,
}))
sys.exit(code)
