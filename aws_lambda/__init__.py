"""dtconnector on AWS Lambda: Function URL / API Gateway ingest, SQS worker, DynamoDB stores.

Entry points (see `handler`): ``aws_lambda.handler.ingest`` and ``aws_lambda.handler.process``.
Importing this package imports no AWS SDK; clients are built on the first invocation.
"""
