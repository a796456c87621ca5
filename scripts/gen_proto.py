"""Regenerate devinit/proto/*_pb2.py(i) from devinit/proto/*.proto (a development-time step).

    pip install 'grpcio-tools==1.70.*'   # protoc 29.x; in a separate venv if you like
    python scripts/gen_proto.py          # run with that venv's python, from the repo root

grpcio-tools 1.70 bundles protoc 29.0, whose Python code asks for protobuf >= 5.29 at run time
(pyproject.toml allows 5.29 and newer). A newer protoc would raise that floor: change both
together. The generated modules are then pointed at devinit's own descriptor pool
(devinit/proto/_pool.py) instead of protobuf's default one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ["devinit/proto/common.proto", "devinit/proto/dapr.proto"]
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
OWN_POOL = "_pool.POOL.AddSerializedFile("


def main() -> int:
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", *FILES]
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode != 0:
        print("protoc failed (is grpcio-tools installed? pip install 'grpcio-tools==1.70.*')", file=sys.stderr)
        return done.returncode
    for proto in FILES:
        module = ROOT / proto.replace(".proto", "_pb2.py")
        text = module.read_text(encoding="utf-8")
        if text.count(DEFAULT_POOL) != 1:
            print(f"{module}: expected one {DEFAULT_POOL!r} in protoc's output", file=sys.stderr)
            return 1
        text = text.replace(DEFAULT_POOL, OWN_POOL)
        # protoc's marker for Google's own tooling; here the generated code is checked in on purpose
        text = text.replace("# NO CHECKED-IN PROTOBUF GENCODE\n", "")
        text = text.replace(
            "from google.protobuf.internal import builder as _builder\n",
            "from google.protobuf.internal import builder as _builder\nfrom devinit.proto import _pool\n",
            1,
        )
        module.write_text(text, encoding="utf-8")
        print(f"wrote {module.relative_to(ROOT)} and its .pyi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
