#!/usr/bin/env bash
# Installs the Python packages the test suite drives edgekv with — grpcio and its
# health and reflection clients (standard gRPC probes from outside), and the
# validators of the deployment files (kubernetes-validate, with the API's
# schemas; check-jsonschema, with the compose spec) — into a venv under
# $HOME/.cache/edgekv-venv, once. Prints the venv's python.
set -euo pipefail

venv="${EDGEKV_VENV:-$HOME/.cache/edgekv-venv}"
packages=(grpcio==1.85.4 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
  kubernetes-validate==1.31.0 check-jsonschema==0.39.0)

if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv" >&2 || {
    echo "error: cannot create a Python venv at $venv (Debian: apt-get install -y python3-venv)" >&2
    exit 1
  }
fi
if ! "$venv/bin/python3" -c 'import grpc, grpc_health.v1, grpc_reflection.v1alpha, kubernetes_validate, check_jsonschema' 2>/dev/null; then
  echo "installing ${packages[*]} into $venv" >&2
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi
echo "$venv/bin/python3"
