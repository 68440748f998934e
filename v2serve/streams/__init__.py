"""Stream transports: Kafka and Kinesis consumers that drive the same graph as HTTP.

Nothing here is imported by ``import v2serve``; aiokafka and boto3 are imported only by the worker of a stream
that is turned on.
"""
