#!/usr/bin/env python3
"""Example Switchyard client in Python (Debian 12: python3-grpcio, protobuf-compiler,
protobuf-compiler-grpc).

Lists the cluster's capabilities, upscales an image and streams one LLM completion through a
switchyard-gateway's public gRPC API (proto/switchyard/v1/gateway.proto). The Python stubs are
generated from the proto at start-up into a temporary directory with protoc and
grpc_python_plugin, so there is nothing to build first.

    python3 examples/python/client.py --gateway 127.0.0.1:50051 \
        --upscale-model esrgan-slim-x4 --image in.png --out out.png \
        --llm-model my-llm --prompt "Hello"

Exits 0 on success, 1 when a call fails (the gRPC status is printed), 2 on bad usage.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
GATEWAY_PROTO = "switchyard/v1/gateway.proto"


def generate_stubs(proto_root, out_dir):
    """Generates gateway_pb2.py and gateway_pb2_grpc.py under out_dir; returns out_dir."""
    plugin = shutil.which("grpc_python_plugin")
    if plugin is not None and shutil.which("protoc") is not None:
        command = ["protoc", "-I", proto_root, "--python_out", out_dir, "--grpc_out", out_dir,
                   "--plugin=protoc-gen-grpc=" + plugin, GATEWAY_PROTO]
    else:
        # python3-grpc-tools (or pip's grpcio-tools) carries its own protoc.
        command = [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_root,
                   "--python_out", out_dir, "--grpc_python_out", out_dir, GATEWAY_PROTO]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("generating the Python stubs failed: " + " ".join(command) + "\n" +
                           result.stderr)
    return out_dir


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default=os.environ.get("SWITCHYARD_GATEWAY",
                                                            "127.0.0.1:50051"),
                        help="gateway gRPC address HOST:PORT (default: $SWITCHYARD_GATEWAY or "
                             "127.0.0.1:50051)")
    parser.add_argument("--proto-root", default=DEFAULT_PROTO_ROOT,
                        help="directory holding switchyard/v1/gateway.proto")
    parser.add_argument("--timeout", type=float, default=60, help="deadline of each call, s")
    parser.add_argument("--upscale-model", default="esrgan-slim-x4",
                        help="upscale model id (see the capabilities)")
    parser.add_argument("--image", help="PNG or JPEG to upscale (skip the upscale when omitted)")
    parser.add_argument("--out", default="upscaled.png", help="where to write the upscaled PNG")
    parser.add_argument("--llm-model", help="LLM model id (skip the LLM call when omitted)")
    parser.add_argument("--prompt", default="Hello!", help="the user message for the LLM")
    parser.add_argument("--max-tokens", type=int, default=64, help="LLM tokens to generate")
    parser.add_argument("--temperature", type=float,
                        help="LLM sampling temperature, 0 for greedy (gateway default 0.7)")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.image is not None and not os.path.isfile(args.image):
        print(f"error: --image {args.image!r} does not exist", file=sys.stderr)
        return 2
    if args.temperature is not None and not args.temperature >= 0:
        print("error: --temperature must be >= 0", file=sys.stderr)
        return 2
    if args.max_tokens <= 0:
        print("error: --max-tokens must be positive", file=sys.stderr)
        return 2
    if not os.path.isfile(os.path.join(args.proto_root, GATEWAY_PROTO)):
        print(f"error: {GATEWAY_PROTO} not found under --proto-root {args.proto_root!r}",
              file=sys.stderr)
        return 2

    import grpc  # Debian: python3-grpcio

    with tempfile.TemporaryDirectory(prefix="switchyard-stubs-") as stubs:
        try:
            generate_stubs(args.proto_root, stubs)
        except (RuntimeError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        sys.path.insert(0, stubs)
        from switchyard.v1 import gateway_pb2, gateway_pb2_grpc

        # Media travel inline, so allow large messages.
        options = [("grpc.max_receive_message_length", 256 << 20),
                   ("grpc.max_send_message_length", 256 << 20)]
        request_id = uuid.uuid4().hex
        metadata = [("x-request-id", request_id)]
        with grpc.insecure_channel(args.gateway, options=options) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            try:
                # 1. What the cluster offers.
                caps = stub.ListCapabilities(gateway_pb2.ListCapabilitiesRequest(),
                                             timeout=args.timeout, metadata=metadata)
                print(f"capabilities ({len(caps.orchestrators)} orchestrators):")
                for c in caps.capabilities:
                    print(f"  {c.pipeline:<20} {c.model_id:<24} warm on {c.warm_orchestrators}"
                          f"/{c.orchestrators}, capacity {c.capacity}")

                # 2. An upscale.
                if args.image is not None:
                    with open(args.image, "rb") as f:
                        image = f.read()
                    start = time.monotonic()
                    resp = stub.Upscale(
                        gateway_pb2.UpscaleRequest(model_id=args.upscale_model, image=image),
                        timeout=args.timeout, metadata=metadata)
                    if not resp.images:
                        print("error: the gateway returned no image", file=sys.stderr)
                        return 1
                    with open(args.out, "wb") as f:
                        f.write(resp.images[0].data)
                    print(f"upscale: {args.out} {resp.images[0].width}x{resp.images[0].height} "
                          f"on {resp.job.orchestrator} "
                          f"in {(time.monotonic() - start) * 1000:.0f} ms")

                # 3. An LLM completion, printed token by token as it streams.
                if args.llm_model is not None:
                    request = gateway_pb2.LLMRequest(
                        model=args.llm_model, max_tokens=args.max_tokens,
                        messages=[gateway_pb2.LLMMessage(role="user", content=args.prompt)])
                    if args.temperature is not None:
                        request.temperature = args.temperature
                    print("llm: ", end="", flush=True)
                    last = None
                    for message in stub.LLM(request, timeout=args.timeout, metadata=metadata):
                        for choice in message.choices:
                            print(choice.delta.content, end="", flush=True)
                        last = message
                    print()
                    if last is None:
                        print("error: the LLM stream was empty", file=sys.stderr)
                        return 1
                    u = last.usage
                    print(f"llm usage: prompt {u.prompt_tokens}, completion "
                          f"{u.completion_tokens}, total {u.total_tokens} "
                          f"on {last.job.orchestrator}")
            except grpc.RpcError as e:
                print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
                print(f"request id: {request_id}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
