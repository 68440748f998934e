"""The v2 protocol over gRPC (``inference.GRPCInferenceService``), served beside HTTP on the same event loop.

Needs the ``grpc`` extra (grpcio, grpcio-health-checking, grpcio-reflection, grpcio-status, protobuf).
"""
