"""The descriptor pool of devinit's copy of Dapr's messages (kept apart from protobuf's default).

The official Dapr SDK registers the same message names (``dapr.proto.runtime.v1.GetStateRequest``
...) in protobuf's default pool; two files declaring one name cannot both be added there, so an
app or a test that imports both would fail. devinit's generated modules add their files to this
pool instead (scripts/gen_proto.py writes them so), with the well-known types they import.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, empty_pb2

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(empty_pb2.DESCRIPTOR.serialized_pb)
