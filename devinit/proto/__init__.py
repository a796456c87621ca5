"""Dapr's gRPC messages as devinit uses them, from devinit's own .proto files (see common.proto).

``api_v1`` and ``common_v1`` are named as in the Dapr SDK (``dapr.proto.api_v1``,
``dapr.proto.common_v1``); ``dapr_pb2.DESCRIPTOR`` holds the ``Dapr`` service.
"""

from devinit.proto import common_pb2 as common_v1
from devinit.proto import dapr_pb2
from devinit.proto import dapr_pb2 as api_v1

__all__ = ["api_v1", "common_v1", "dapr_pb2"]
