#!/usr/bin/env python3
"""Starts a throwaway SeaweedFS S3 server on 127.0.0.1 for the test suite.

    python3 scripts/seaweedfs.py WEED DATA_DIR

picks free ports (SeaweedFS also uses port+10000 for gRPC), starts
`weed server` with its data in DATA_DIR, waits until the S3 API answers and
prints `PID ENDPOINT`. Signed requests must use the access key
`ravenwatch-test` / secret `ravenwatch-test-secret`; unsigned requests are
allowed (anonymous). The caller stops it with SIGKILL (SIGTERM is slow).
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    """A port p such that p and p+10000 are both free."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def main():
    weed, data = sys.argv[1], sys.argv[2]
    ports = set()
    while len(ports) < 4:
        ports.add(free_port())
    s3, master, volume, filer = sorted(ports)
    # Signed requests must use the test identity (so wrong credentials are
    # refused as on AWS); unsigned ones are anonymous, which the tests use to
    # arrange and inspect buckets.
    config = f"{data}/s3.json"
    with open(config, "w") as f:
        json.dump({"identities": [
            {"name": "anonymous", "actions": ["Read", "Write", "List", "Admin", "Tagging"]},
            {"name": "ravenwatch-test",
             "credentials": [{"accessKey": "ravenwatch-test", "secretKey": "ravenwatch-test-secret"}],
             "actions": ["Read", "Write", "List", "Admin", "Tagging"]},
        ]}, f)
    log = open(f"{data}/weed.log", "w")
    proc = subprocess.Popen(
        [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
         "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
         "-master.volumeSizeLimitMB=64", "-volume.max=200"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"weed exited with {proc.returncode}; see {data}/weed.log")
        try:
            # Creating and writing to a bucket proves the volume servers are up.
            req = urllib.request.Request(f"{endpoint}/ready-check", method="PUT")
            urllib.request.urlopen(req, timeout=2)
            req = urllib.request.Request(f"{endpoint}/ready-check/probe", data=b"x" * 4096, method="PUT")
            urllib.request.urlopen(req, timeout=5)
            print(proc.pid, endpoint)
            return
        except Exception:
            time.sleep(0.3)
    proc.kill()
    sys.exit(f"SeaweedFS did not become ready in 60 s; see {data}/weed.log")


if __name__ == "__main__":
    main()
