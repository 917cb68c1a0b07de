"""Arranges and inspects S3 + SQS on the test MiniStack (boto3, from the
test venv). Ravenwatch itself talks to it through the AWS SDK for Rust.

    python aws.py ENDPOINT setup NAME [MAX_RECEIVES]  -> prints the queue URL
    python aws.py ENDPOINT upload NAME KEY FILE
    python aws.py ENDPOINT split NAME PREFIX FILE N  -> FILE's lines (.gz too) as N objects, in order
    python aws.py ENDPOINT send QUEUE_URL BODY
    python aws.py ENDPOINT dead NAME             -> messages in NAME-dlq
    python aws.py ENDPOINT fifo NAME             -> creates FIFO queue NAME, prints its URL
    python aws.py ENDPOINT count QUEUE_URL       -> messages waiting
"""
import json
import sys

import boto3

endpoint, command, *args = sys.argv[1:]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
sqs, s3 = boto3.client("sqs", **kw), boto3.client("s3", **kw)

if command == "setup":
    name, receives = args[0], (args[1] if len(args) > 1 else "1")
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": receives}),
    })["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=name)
    s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    print(url)
elif command == "upload":
    name, key, path = args
    with open(path, "rb") as f:
        s3.put_object(Bucket=name, Key=key, Body=f.read())
elif command == "split":
    import gzip
    name, prefix, path, n = args
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    n = int(n)
    per = -(-len(lines) // n)
    for i in range(n):
        part = b"".join(lines[i * per:(i + 1) * per])
        s3.put_object(Bucket=name, Key=f"{prefix}part-{i:03d}.jsonl", Body=part)
elif command == "send":
    url, body = args
    sqs.send_message(QueueUrl=url, MessageBody=body)
elif command == "dead":
    name, = args
    url = sqs.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    print(json.dumps([m["Body"] for m in got.get("Messages", [])]))
elif command == "fifo":
    name, = args
    print(sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"])
elif command == "count":
    url, = args
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    print(attrs["Attributes"]["ApproximateNumberOfMessages"])
else:
    sys.exit(f"unknown command {command}")
