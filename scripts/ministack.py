#!/usr/bin/env python3
"""Starts a throwaway MiniStack (S3 + SQS with S3 notifications, DLQ
redrive) on 127.0.0.1 for the test suite.

    python3 scripts/ministack.py MINISTACK_BIN LOG_FILE

picks a free port, starts it bound to 127.0.0.1, waits until SQS answers
and prints `PID ENDPOINT`. Any access key works. The caller stops it with
SIGKILL.
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request


def main():
    binary, log_path = sys.argv[1], sys.argv[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GATEWAY_PORT=str(port), BIND_HOST="127.0.0.1", MINISTACK_HOST="127.0.0.1")
    log = open(log_path, "w")
    proc = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"ministack exited ({proc.returncode}); see {log_path}")
        try:
            urllib.request.urlopen(endpoint + "/?Action=ListQueues", timeout=1).read()
            print(proc.pid, endpoint)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"ministack did not answer on {endpoint} within 60 s; see {log_path}")


if __name__ == "__main__":
    main()
