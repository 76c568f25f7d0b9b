"""Read deploy/*.yaml the way Docker Compose does, without Docker: YAML (with merge keys),
``${VAR}`` interpolation, override files, and what a service's container would run.

Used by tests/test_deploy.py (the compose files start the programs the tests
start) and tests/test_multihost.py (which runs the split deployment's own
server and client commands on separate network namespaces).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SECRETS_DIR = "/run/secrets/"

_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(ValueError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        val = env.get(name)
        unset = val is None or (op is not None and op.startswith(":") and val == "")
        if op in (":-", "-") and unset:
            return interpolate(arg, env)
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return val or ""

    return _VAR.sub(sub, value)


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


def load(files: list[str], env: dict[str, str]) -> dict:
    """The merged, interpolated project of deploy/<files> (later files override earlier ones)."""
    doc: dict = {}
    for name in files:
        raw = yaml.safe_load((DEPLOY / name).read_text())
        doc = _merge(doc, interpolate(raw, env))
    return doc


def dockerfile(service: dict) -> Path:
    build = service["build"]
    return (DEPLOY / build["context"] / build["dockerfile"]).resolve()


def dockerfile_env(path: Path) -> dict[str, str]:
    """ENV KEY=VALUE pairs of a Dockerfile (what every container of the image starts with)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for tok in shlex.split(line[4:], comments=True):
                k, _, v = tok.partition("=")
                out[k] = v
    return out


def container_env(service: dict) -> dict[str, str]:
    """The image's ENV, then the service's environment (what `lada` sees in the container),
    with the entrypoint's LADA_DB_URL_FILE indirection applied (the URL itself is a secret)."""
    env = dockerfile_env(dockerfile(service)) if "build" in service else {}
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.partition("=")[::2] for item in declared)
    env.update({k: "" if v is None else str(v) for k, v in declared.items()})
    if env.get("LADA_DB_URL_FILE"):
        env["LADA_SERVER__DB"] = "postgresql://lada:secret@postgres:5432/lada"  # what the secret file holds
    return env


def secret_files(doc: dict) -> dict[str, Path]:
    """Top-level secret name -> host file (relative paths are relative to deploy/)."""
    return {name: (DEPLOY / spec["file"]).resolve() for name, spec in (doc.get("secrets") or {}).items()}


def host_path(doc: dict, service: dict, container_path: str) -> Path | None:
    """The host file behind a path inside the container: a mounted secret or a bind-mounted file."""
    if container_path.startswith(SECRETS_DIR):
        name = container_path[len(SECRETS_DIR):]
        return secret_files(doc).get(name) if name in (service.get("secrets") or []) else None
    for vol in service.get("volumes") or []:
        parts = vol.split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/")) and parts[1] == container_path:
            return (DEPLOY / parts[0]).resolve()
    return None


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Run with exactly these LADA_* variables (others untouched), restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LADA_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update({k: v for k, v in env.items() if k.startswith("LADA_")})
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("LADA_")]:
            del os.environ[k]
        os.environ.update(saved)
