"""The committed stubs must equal what the generator produces from protos/."""

from __future__ import annotations

from pathlib import Path

from lada.common.proto.generate import DEFAULT_OUT, generate


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh
    for p in fresh:
        committed = DEFAULT_OUT / p.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run python -m lada.common.proto.generate"
        assert committed.read_text() == p.read_text(), f"{committed} is stale: run python -m lada.common.proto.generate"
