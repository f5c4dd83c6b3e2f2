"""The client port's gRPC health service, as a Python gRPC client (grpcio-health-checking) and
kine probe it, and etcd's /health and /version over plain HTTP on the same port."""

import json
import urllib.request


def test_grpc_health_check_on_every_member(endpoints):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for endpoint in endpoints:
        with grpc.insecure_channel(endpoint) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_health_and_version_over_http_on_the_client_port(endpoints):
    for endpoint in endpoints:
        with urllib.request.urlopen(f"http://{endpoint}/health", timeout=10) as r:
            assert r.status == 200
            assert json.load(r) == {"health": "true", "reason": ""}
        with urllib.request.urlopen(f"http://{endpoint}/version", timeout=10) as r:
            version = json.load(r)
            assert version["etcdserver"] == "3.5.13"
            assert version["etcdcluster"] == "3.5.0"
