# Ravenwatch on S3 notifications -> SQS -> Lambda (container image).
#
# A log bucket notifies a queue of each new object; a Lambda function running
# `ravenwatch -p /var/task lambda --group-queue <FIFO queue>` consumes it
# through an event source mapping that reports partial batch failures
# (messages that keep failing go to a dead-letter queue). Each invocation's
# round leaves its matches as batches for the grouping shards and sends one
# message per shard to the FIFO group queue; a second mapping on that queue
# hands each shard's messages to one invocation at a time, which merges the
# shard's settled batches (README, "Scaling out"). Alerts, state and the
# input ledger live in the storage bucket named in the image's
# ravenwatch.yml (`storage: s3://…`).
#
#   terraform init && terraform apply -var image_uri=<ECR image> -var log_bucket=<bucket> -var storage_bucket=<bucket>

terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 5.0" }
  }
}

variable "image_uri" {
  description = "ECR image built as in README's Lambda section"
  type        = string
}
variable "log_bucket" {
  description = "Existing bucket the logs arrive in"
  type        = string
}
variable "log_prefix" {
  description = "Only objects under this prefix are processed"
  type        = string
  default     = "AWSLogs/"
}
variable "storage_bucket" {
  description = "Existing bucket for Ravenwatch's storage (state, runs, enrichment snapshots)"
  type        = string
}
variable "timeout_seconds" {
  description = "Function timeout: above the run time of the largest batch"
  type        = number
  default     = 300
}
variable "settle_seconds" {
  description = "A shard's merge waits until no round wrote batches for this long (longer than a round takes)"
  type        = number
  default     = 10
}
variable "concurrency" {
  description = "Concurrent invocations at most (detection rounds and merges together)"
  type        = number
  default     = 50
}

data "aws_s3_bucket" "logs" {
  bucket = var.log_bucket
}

resource "aws_sqs_queue" "dead" {
  name                      = "ravenwatch-objects-dlq"
  message_retention_seconds = 1209600
}

resource "aws_sqs_queue" "objects" {
  name = "ravenwatch-objects"
  # AWS advises six times the function timeout for event source mappings.
  visibility_timeout_seconds = var.timeout_seconds * 6
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead.arn
    maxReceiveCount     = 5
  })
}

resource "aws_sqs_queue_policy" "from_s3" {
  queue_url = aws_sqs_queue.objects.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.objects.arn
      Condition = { ArnEquals = { "aws:SourceArn" = data.aws_s3_bucket.logs.arn } }
    }]
  })
}

resource "aws_s3_bucket_notification" "logs" {
  bucket = var.log_bucket
  queue {
    queue_arn     = aws_sqs_queue.objects.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.log_prefix
  }
  depends_on = [aws_sqs_queue_policy.from_s3]
}

# The grouping shards' merges: one message group per shard, so SQS hands a
# shard's messages to one invocation at a time. Messages of batches still
# settling come back after the visibility timeout.
resource "aws_sqs_queue" "groups" {
  name                       = "ravenwatch-objects-groups.fifo"
  fifo_queue                 = true
  visibility_timeout_seconds = var.settle_seconds
}

resource "aws_iam_role" "ravenwatch" {
  name = "ravenwatch-lambda"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "ravenwatch" {
  role = aws_iam_role.ravenwatch.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { # the event source mappings read and delete for the function
        Effect   = "Allow"
        Action   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
        Resource = [aws_sqs_queue.objects.arn, aws_sqs_queue.groups.arn]
      },
      { # a round triggers the shards it left batches for
        Effect   = "Allow"
        Action   = ["sqs:SendMessage"]
        Resource = aws_sqs_queue.groups.arn
      },
      { # the logs: the object, and the listing that finds its ETag
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:ListBucket"]
        Resource = [data.aws_s3_bucket.logs.arn, "${data.aws_s3_bucket.logs.arn}/*"]
      },
      { # the storage: state with conditional writes, runs, snapshots, deliveries
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
        Resource = ["arn:aws:s3:::${var.storage_bucket}", "arn:aws:s3:::${var.storage_bucket}/*"]
      },
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "*"
      },
    ]
  })
}

resource "aws_lambda_function" "ravenwatch" {
  function_name = "ravenwatch"
  role          = aws_iam_role.ravenwatch.arn
  package_type  = "Image"
  image_uri     = var.image_uri
  timeout       = var.timeout_seconds
  memory_size   = 3008 # 2 vCPUs: the engine and one Python worker
  image_config {
    command = ["-p", "/var/task", "lambda", "--group-queue", aws_sqs_queue.groups.url,
    "--settle-seconds", tostring(var.settle_seconds)]
  }
  reserved_concurrent_executions = var.concurrency
}

resource "aws_lambda_event_source_mapping" "objects" {
  event_source_arn                   = aws_sqs_queue.objects.arn
  function_name                      = aws_lambda_function.ravenwatch.arn
  batch_size                         = 100
  maximum_batching_window_in_seconds = 20
  function_response_types            = ["ReportBatchItemFailures"]
}

resource "aws_lambda_event_source_mapping" "groups" {
  event_source_arn        = aws_sqs_queue.groups.arn
  function_name           = aws_lambda_function.ravenwatch.arn
  batch_size              = 10
  function_response_types = ["ReportBatchItemFailures"]
}

output "queue_url" {
  value = aws_sqs_queue.objects.id
}

output "group_queue_url" {
  value = aws_sqs_queue.groups.id
}
