"""Regenerate the protobuf/gRPC stubs from protos/lada/v1/*.proto.

    python -m lada.common.proto.generate [--out DIR]

Generated modules import each other as ``lada.v1``; they are rewritten to the
package they live in (``lada.common.proto.lada.v1``). tests/test_protos.py
regenerates into a temp folder and fails when the committed stubs are stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
DEFAULT_OUT = Path(__file__).resolve().parent


def generate(out: Path = DEFAULT_OUT) -> list[Path]:
    from grpc_tools import protoc

    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "lada" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    written = sorted((out / "lada" / "v1").glob("*_pb2*.py*"))
    for p in written:
        text = re.sub(r"^from lada\.v1 import", "from lada.common.proto.lada.v1 import", p.read_text(),
                      flags=re.M)
        p.write_text(text)
    for pkg in (out / "lada", out / "lada" / "v1"):
        (pkg / "__init__.py").touch()
    return written


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    for path in generate(ap.parse_args().out):
        print(path, file=sys.stderr)
