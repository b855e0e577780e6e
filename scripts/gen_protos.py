"""Regenerate the Python code for every proto under proto/ into gen/python/.

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: gen/python)
"""
from __future__ import annotations

import sys
from pathlib import Path

import google.rpc
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    # google/rpc/*.proto, from googleapis-common-protos (whose google.rpc modules the code imports).
    googleapis = Path(next(iter(google.rpc.__path__))).parent.parent
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"-I{googleapis}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Generated modules import each other as shopstream.<area>.v1, so every
    # directory on the way must be a regular package.
    for proto in protos:
        pkg = out_dir / Path(proto).parent
        while pkg != out_dir:
            (pkg / "__init__.py").touch()
            pkg = pkg.parent


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "gen" / "python")
