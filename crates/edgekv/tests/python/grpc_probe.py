"""Probes a gRPC server as orchestrators and operators do: the standard
grpc.health.v1 service (grpcio-health-checking) and server reflection
(grpcio-reflection), with no credential. Prints one JSON object.

usage: grpc_probe.py HOST:PORT SERVICE [SERVICE ...]
"""
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main() -> None:
    target, services = sys.argv[1], sys.argv[2:]
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)
    health = health_pb2_grpc.HealthStub(channel)
    statuses = {}
    for service in [""] + services:
        try:
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        except grpc.RpcError as err:
            statuses[service] = f"error: {err.code().name}"
    try:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        unknown = "answered"
    except grpc.RpcError as err:
        unknown = err.code().name
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    listed = []
    for answer in reflection.ServerReflectionInfo(iter([request]), timeout=5):
        listed = [s.name for s in answer.list_services_response.service]
    described = {}
    for service in services:
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
        for answer in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            described[service] = len(answer.file_descriptor_response.file_descriptor_proto) > 0
    print(json.dumps({"health": statuses, "unknown": unknown, "listed": listed, "described": described}))


if __name__ == "__main__":
    main()
