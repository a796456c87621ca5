"""The state server: two front ends (HTTP/1.1 and gRPC over HTTP/2) over one runtime.

``http_wire`` / ``grpc_wire`` speak the protocols; ``http_api`` / ``grpc_api`` map Dapr's
routes and RPCs onto ``runtime``; ``serve`` runs them together. See docs/architecture.md.
"""
