#!/usr/bin/env python3
"""Run a command; print its wall time and peak RSS (children) to stderr as JSON."""
import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": round(wall, 3), "peak_rss_mb": round(peak_kb / 1024, 1), "exit": code}))
sys.exit(code)
