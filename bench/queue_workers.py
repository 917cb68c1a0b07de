#!/usr/bin/env python3
"""Queue workers against MiniStack on 127.0.0.1 (S3 notifications → SQS).

    python bench/queue_workers.py RAVENWATCH PROJECT EVENTS.jsonl [--objects 200] [--per-object 1000] [--max-messages 25] [--settle 2]

For 1, 2 and 4 `ravenwatch worker --queue` processes (each with one Python
worker) sharing one queue and one storage, alerts grouped in 16 shards
through the FIFO group queue: the wall time until every match is merged
(the last round, then the settle time and the merges), events/s, rounds and
merges, and the matches (which must not change). Then the latency from an
upload to the merge that records its alerts, with one idle worker. Needs
boto3 (run it with the test venv's python) and MiniStack in its own venv
(`~/.cache/ravenwatch-ministack`, as the test command installs it).
Each worker prints the AWS requests it sent; the sums per object are the
cost of an object in requests (with `--s3-storage`, the ledger markers,
batches, state commits and outputs are S3 requests too).
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ravenwatch")
    p.add_argument("project")
    p.add_argument("events")
    p.add_argument("--objects", type=int, default=200)
    p.add_argument("--per-object", type=int, default=1000)
    p.add_argument("--max-messages", type=int, default=25,
                   help="messages per run: small enough that every worker gets some")
    p.add_argument("--settle", type=int, default=2,
                   help="--settle-seconds of the workers (a merge waits this long after the last round)")
    p.add_argument("--s3-storage", action="store_true",
                   help="keep the storage (state, ledger, batches, outputs) in a MiniStack bucket, not on disk")
    a = p.parse_args()
    venv = os.environ.get("RAVENWATCH_MINISTACK_VENV", os.path.expanduser("~/.cache/ravenwatch-ministack"))
    work = tempfile.mkdtemp()
    started = subprocess.run([sys.executable, os.path.join(HERE, "..", "scripts", "ministack.py"),
                              os.path.join(venv, "bin", "ministack"), os.path.join(work, "ministack.log")],
                             check=True, capture_output=True, text=True).stdout.split()
    pid, endpoint = int(started[0]), started[1]
    try:
        run(a, endpoint, work)
    finally:
        os.kill(pid, 9)
        shutil.rmtree(work, ignore_errors=True)


def run(a, endpoint, work):
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="test", aws_secret_access_key="test")
    sqs, s3 = boto3.client("sqs", **kw), boto3.client("s3", **kw)
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test",
               AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
    with open(a.events, "rb") as f:
        lines = [next(f) for _ in range(a.objects * a.per_object)]
    bodies = [b"".join(lines[i * a.per_object:(i + 1) * a.per_object]) for i in range(a.objects)]
    events = a.objects * a.per_object

    def arrange(name):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.create_bucket(Bucket=name)
        s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
        return url

    def storage(name):
        path = os.path.join(work, f"storage-{name}")
        if a.s3_storage:
            s3.create_bucket(Bucket=f"{name}-store")
            path = f"s3://{name}-store/ravenwatch"
        # Tables loaded once beforehand, as a running deployment has them.
        subprocess.run([a.ravenwatch, "-p", a.project, "--storage", path, "enrichment", "sync"],
                       check=True, capture_output=True, env=env)
        return path

    def requests(errs):
        """Requests the workers sent, by `service:operation`, from their last line."""
        total = {}
        for e in errs:
            for line in e.splitlines():
                if not line.startswith("requests sent: "):
                    continue
                for service in line[len("requests sent: "):].split("), "):
                    name, _, ops = service.partition(" (")
                    name = name.split()[0]
                    for op in ops.rstrip(")").split(", "):
                        op_name, n = op.rsplit(" ", 1)
                        key = f"{name}:{op_name}"
                        total[key] = total.get(key, 0) + int(n.replace(",", ""))
        return total

    print(f"== {a.objects} objects of {a.per_object:,} events, workers each with one Python worker")
    for workers in (1, 2, 4):
        name = f"bench-{workers}"
        url = arrange(name)
        for i, body in enumerate(bodies):
            s3.put_object(Bucket=name, Key=f"logs/{i:05d}.jsonl", Body=body)
        path = storage(name)
        # Notifications arrive asynchronously: start once all are queued.
        deadline = time.time() + 120
        while time.time() < deadline:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            if int(attrs["Attributes"]["ApproximateNumberOfMessages"]) >= a.objects:
                break
            time.sleep(0.2)
        start = time.perf_counter()
        procs = [subprocess.Popen([a.ravenwatch, "-p", a.project, "--storage", path, "worker", "--queue", url,
                                   "--until-empty", "--workers", "1", "--no-deliver",
                                   "--max-messages", str(a.max_messages), "--settle-seconds", str(a.settle)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
        outs = [p.communicate() for p in procs]
        if os.environ.get("BENCH_QUEUE_LOG"):
            for i, (o, e) in enumerate(outs):
                with open(f"{os.environ['BENCH_QUEUE_LOG']}-{workers}-{i}.log", "w") as f:
                    f.write(o + "\n--- stderr\n" + e)
        seconds = time.perf_counter() - start
        rounds = sum(o.count("\nrun ") + o.startswith("run ") for o, _ in outs)
        merges = sum(o.count("\nmerge ") + o.startswith("merge ") for o, _ in outs)
        if a.s3_storage:
            matches = count_s3_matches(s3, f"{name}-store")
        else:
            matches = sum(1 for f in glob.glob(f"{path}/runs/*/matches.jsonl")
                          if not os.path.exists(os.path.join(os.path.dirname(f), "incomplete"))
                          for _ in open(f))
        left = sum(e.count("stays in the queue") for _, e in outs)
        detect = seconds - a.settle
        print(f"{workers} worker(s): {seconds:.2f} s to the last merge ({events / seconds:,.0f} events/s; "
              f"{events / detect:,.0f} events/s without the {a.settle} s settle), {rounds} rounds, "
              f"{merges} merges, {matches} matches; {left} messages left for redelivery")
        sent = requests(e for _, e in outs)
        for service in ("s3", "sqs"):
            ops = {k.split(":", 1)[1]: v for k, v in sent.items() if k.startswith(service + ":")}
            if ops:
                detail = ", ".join(f"{op} {n / a.objects:.2f}" for op, n in sorted(ops.items()))
                print(f"  {service} requests per object: {sum(ops.values()) / a.objects:.2f} ({detail})")
    name = "bench-latency"
    url = arrange(name)
    path = storage(name)
    worker = subprocess.Popen([a.ravenwatch, "-p", a.project, "--storage", path, "worker", "--queue", url,
                               "--workers", "1", "--no-deliver", "--settle-seconds", str(a.settle)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    import queue
    import threading
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put((time.perf_counter(), l)) for l in worker.stdout],
                     daemon=True).start()
    time.sleep(3)
    latencies = []
    for i in range(3):
        start = time.perf_counter()
        s3.put_object(Bucket=name, Key=f"logs/late-{i}.jsonl", Body=bodies[i])
        at, line = lines.get()
        while not line.startswith("run "):
            at, line = lines.get()
        detected = at - start
        while not line.startswith("merge "):
            at, line = lines.get()
        latencies.append((detected, at - start))
        time.sleep(a.settle + 2)  # the upload's other merges
        while not lines.empty():
            lines.get()
    worker.terminate()
    worker.wait()
    print(f"upload → round done → first merge committed (settle {a.settle} s), one idle worker: "
          + ", ".join(f"{d:.2f} s → {m:.2f} s" for d, m in latencies))


def count_s3_matches(s3, bucket):
    """Matches in the committed runs of a storage in `bucket`."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ravenwatch/runs/"):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    incomplete = {k.rsplit("/", 1)[0] for k in keys if k.endswith("/incomplete")}
    n = 0
    for k in keys:
        if k.endswith("/matches.jsonl") and k.rsplit("/", 1)[0] not in incomplete:
            n += s3.get_object(Bucket=bucket, Key=k)["Body"].read().count(b"\n")
    return n


if __name__ == "__main__":
    main()
