#!/usr/bin/env python3
"""Splits a JSON-lines file into N objects and PUTs them into a bucket of a
local S3 server that accepts unsigned requests (the SeaweedFS the benchmark
starts): python3 bench/s3_upload.py ENDPOINT BUCKET PREFIX FILE N"""
import sys
import urllib.request


def put(url, data=b""):
    urllib.request.urlopen(urllib.request.Request(url, data=data, method="PUT"), timeout=60)


def main():
    endpoint, bucket, prefix, path, parts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    put(f"{endpoint}/{bucket}")
    with open(path, "rb") as f:
        lines = f.readlines()
    per = -(-len(lines) // parts)
    for i in range(parts):
        chunk = b"".join(lines[i * per:(i + 1) * per])
        if chunk:
            put(f"{endpoint}/{bucket}/{prefix}/part-{i:04d}.jsonl", chunk)
    print(f"uploaded {len(lines)} events in {parts} objects to s3://{bucket}/{prefix}/")


if __name__ == "__main__":
    main()
