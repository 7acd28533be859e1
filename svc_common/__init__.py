"""What the scheduler and the executor both use to serve, and nothing the client library needs.

Modules, one concept each:
    serving           a gRPC server with health, message limits, security; binding and announcing
    auth              the bearer-token interceptor and the caller's identity
    tls               the servers' TLS credentials
    metrics_endpoint  the Prometheus /metrics endpoint and the per-RPC status counter
    logs              structured logging set-up
    wire              packed arrays (uint32 ids, float32 values) as bytes on the wire
    healthcheck       ``python -m svc_common.healthcheck HOST:PORT``, the containers' health probe
"""
