"""deploy/: the compose files, Dockerfiles, entrypoint and health checks.

* every compose project validates with a real Compose implementation when one
  is installed (`docker compose`, else `docker-compose`; CI installs the
  latter), and always structurally here;
* each service's command is the `lada` program the integration tests start
  (`python -m lada.cli server|client --name client-N|dashboard`), its
  environment maps to real config knobs that `LadaConfig.load` accepts, and
  the services of one deployment agree (one config, one database, one model
  cache, ports, health checks, TLS files);
* the entrypoint and the health-check script are run for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lada.common.config import LadaConfig, config_from_args, knobs
from lada.common.models import is_embedded, model_dir

from lada import cli
from tests.support import compose as cf
from tests.support.paths import ROOT, TINY, free_port
from tests.support.paths import cli as _cli

ENV = {  # what an operator sets (deploy/.env or the shell) for the files that require it
    "LADA_JOIN_TOKEN": "join-t0ken",
    "LADA_CLIENT_NAME": "client-2",
    "LADA_SERVER_ADDRESS": "lada.example.org:50051",
}
PROJECTS = {
    "demo": ["compose.yaml"],
    "demo-postgres": ["compose.yaml", "compose.postgres.yaml"],
    "split-server": ["compose.server.yaml"],
    "split-client": ["compose.client.yaml"],
}
LADA_SERVICES = {
    "demo": {"server", "dashboard", "client-1", "client-2", "client-3"},
    "demo-postgres": {"server", "dashboard", "client-1", "client-2", "client-3"},
    "split-server": {"server", "dashboard"},
    "split-client": {"client"},
}
FN = {"server": cli._server, "client": cli._client, "dashboard": cli._dashboard}
KNOBS = {dotted for dotted, _, _ in knobs()}
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


def _project(name: str) -> dict:
    return cf.load(PROJECTS[name], {**os.environ, **ENV})


def _lada_services(doc: dict) -> dict[str, dict]:
    return {n: s for n, s in doc["services"].items() if (s.get("command") or [None])[0] == "lada"}


def _resolve(doc: dict, svc: dict) -> tuple[object, LadaConfig]:
    """Parse the service's command as `lada` would and load its config from its environment."""
    argv = list(svc["command"][1:])
    for i, a in enumerate(argv):
        if a.startswith("/") and i and argv[i - 1].startswith("--"):
            host = cf.host_path(doc, svc, a)
            if argv[i - 1] == "--config":
                assert host is not None and host.is_file(), f"--config {a} is not mounted from a file in deploy/"
                argv[i] = str(host)
    args = cli.build_parser().parse_args(argv)
    with cf.environment(cf.container_env(svc)):
        cfg = config_from_args(args)
    return args, cfg


# --------------------------------------------------------------------------- validation by Compose itself
def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_compose_config_validates(project: str, tmp_path: Path) -> None:
    tool = _compose_cli()
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but neither `docker compose` nor `docker-compose` is installed "
                        "(scripts/test-deps.sh installs docker-compose)")
        pytest.skip("no Compose implementation installed; the structural tests below still run")
    files = [cf.DEPLOY / f for f in PROJECTS[project]]
    # every secret file present (a Compose may check), made here rather than taken from deploy/
    certs, secrets = tmp_path / "certs", tmp_path / "secrets"
    for f in ("ca.pem", "server.pem", "server.key", *(f"clients/{n}.{x}" for n in ("client-2", "healthcheck")
                                                      for x in ("pem", "key"))):
        (certs / f).parent.mkdir(parents=True, exist_ok=True)
        (certs / f).write_text("placeholder\n")
    secrets.mkdir()
    for f in ("db-url", "pg-password"):
        (secrets / f).write_text("placeholder\n")
    env_vars = {**ENV, "LADA_CERTS": str(certs), "LADA_SECRETS": str(secrets)}
    if tool[-1].endswith("docker-compose"):  # v1 predates the top-level `name:`; everything else it checks
        stripped = []
        for f in files:
            text = "\n".join(ln for ln in f.read_text().splitlines() if not ln.startswith("name:"))
            (tmp_path / f.name).write_text(text)
            stripped.append(tmp_path / f.name)
        files = stripped
    empty_env_file = tmp_path / "empty.env"  # ignore any deploy/.env of the developer's own
    empty_env_file.write_text("")
    cmd = [*tool, "--project-directory", str(cf.DEPLOY), "--env-file", str(empty_env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LADA_", "COMPOSE_"))}
    res = subprocess.run([*cmd, "config", "-q"], capture_output=True, text=True, env={**env, **env_vars},
                         timeout=120)
    assert res.returncode == 0, res.stderr
    if project.startswith("split"):  # the operator-supplied values are required, not silently defaulted
        res = subprocess.run([*cmd, "config", "-q"], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode != 0


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_required_variables_are_required(project: str) -> None:
    if not project.startswith("split"):
        cf.load(PROJECTS[project], {})  # the demo runs with no variables set at all
        return
    with pytest.raises(cf.MissingVariable):
        cf.load(PROJECTS[project], {})


# --------------------------------------------------------------------------- the programs the services start
def test_images_run_the_program_the_tests_run() -> None:
    """Containers run the `lada` console script; the integration tests run `python -m lada.cli`: one main."""
    script = re.search(r'^lada\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert script and script.group(1) == "lada.cli:main"
    assert _cli("server")[1:] == ["-m", "lada.cli", "server"]


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_service_commands_are_the_lada_subcommands(project: str) -> None:
    doc = _project(project)
    services = _lada_services(doc)
    assert set(services) == LADA_SERVICES[project]
    for name, svc in services.items():
        args, cfg = _resolve(doc, svc)
        role = name if name in FN else "client"
        assert args.cmd == role and args.fn is FN[role], (name, svc["command"])
        if role == "client":
            expected = ENV["LADA_CLIENT_NAME"] if name == "client" else name
            assert args.name == expected
            assert args.name in cfg.data.client_domains and args.name in cfg.models.clients
        assert cf.dockerfile(svc).name == f"{role}.Dockerfile" and cf.dockerfile(svc).is_file()


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_environment_is_real_config_knobs(project: str) -> None:
    doc = _project(project)
    for name, svc in _lada_services(doc).items():
        env = cf.container_env(svc)
        for key in env:
            if key.startswith("LADA_") and "__" in key:
                sec, _, knob = key[5:].lower().partition("__")
                assert f"{sec}.{knob}" in KNOBS, f"{name}: {key} is not a config knob"
        with cf.environment(env):
            cfg = LadaConfig.load()  # validates every value (extra="forbid")
        for key, val in env.items():
            if key.startswith("LADA_") and "__" in key and key != "LADA_SERVER__DB":
                sec, _, knob = key[5:].lower().partition("__")
                got = getattr(getattr(cfg, sec), knob)
                assert str(got).lower() == str(val).lower(), (name, key, got, val)


def test_demo_services_share_config_database_and_models() -> None:
    for project in ("demo", "demo-postgres"):
        doc = _project(project)
        services = _lada_services(doc)
        resolved = {n: _resolve(doc, s)[1] for n, s in services.items()}
        server = resolved["server"]
        host, port = server.server.address.rsplit(":", 1)
        assert host == "0.0.0.0", "the server must listen on the container's interfaces"
        assert f"127.0.0.1:{port}:{port}" in doc["services"]["server"]["ports"]
        assert server.server.wait_clients == 3
        for name, cfg in resolved.items():
            if name.startswith("client"):
                assert cfg.server.address == f"server:{port}", "clients dial the server's service name"
            rest, base = cfg.model_dump(mode="json"), server.model_dump(mode="json")
            per_host = ("address", "wait_clients") + (("db",) if name.startswith("client") else ())
            for knob in per_host:  # clients never open the database
                rest["server"].pop(knob), base["server"].pop(knob)
            assert rest == base, f"{name} runs another config than the server"
            if not name.startswith("client"):
                assert cfg.db_url == server.db_url
        # one cache on the shared volume, so every model is built once and found by everyone
        for name, svc in services.items():
            assert "lada-data:/data" in svc["volumes"], name
        assert server.models.cache_dir.startswith("/data/") and server.server.data_dir == "/data"
        if project == "demo":
            assert server.db_url == "sqlite:////data/lada.db"
        else:
            assert server.db_url.startswith("postgresql://") and "@postgres:5432/" in server.db_url
            assert doc["services"]["server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        for name in services:
            if name.startswith("client"):
                assert doc["services"][name]["depends_on"]["server"]["condition"] == "service_healthy"
        names = {*server.models.clients.values(), server.models.llm}
        assert all(is_embedded(n) for n in names), "the demo uses the embedded models (nothing to download)"
        dirs = {n: {model_dir(n, c.models, c.data.seed) for c in resolved.values()} for n in names}
        assert all(len(d) == 1 for d in dirs.values()), dirs


def test_split_pair_agrees() -> None:
    server_doc, client_doc = _project("split-server"), _project("split-client")
    _, server = _resolve(server_doc, server_doc["services"]["server"])
    _, dash = _resolve(server_doc, server_doc["services"]["dashboard"])
    _, client = _resolve(client_doc, client_doc["services"]["client"])
    assert client.server.address == ENV["LADA_SERVER_ADDRESS"]
    port = server.server.address.rsplit(":", 1)[1]
    assert f"{port}:{port}" in server_doc["services"]["server"]["ports"]
    assert client.server.join_token == server.server.join_token == ENV["LADA_JOIN_TOKEN"]
    assert server.db_url == dash.db_url and server.db_url.startswith("postgresql")
    for knob in ("run", "data", "models", "lora", "train", "distill", "filter"):
        assert getattr(client, knob) == getattr(server, knob), f"{knob}: client and server configs differ"
    assert server_doc["services"]["dashboard"]["ports"] == ["127.0.0.1:8765:8765"], "dashboard: loopback only"


# --------------------------------------------------------------------------- health checks
@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_health_checks(project: str) -> None:
    doc = _project(project)
    for name, svc in doc["services"].items():
        if name.startswith("client"):
            continue  # clients dial out and open no port: nothing to probe
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and svc["healthcheck"].get("start_period"), name
        if name == "server":
            assert test[1:4] == ["python", "/opt/lada/healthcheck.py", "grpc"]
            assert test[4].endswith(":" + svc["environment"]["LADA_SERVER__ADDRESS"].rsplit(":", 1)[1])
        elif name == "dashboard":
            assert test[1:4] == ["python", "/opt/lada/healthcheck.py", "http"]
            port = _resolve(doc, svc)[1].dashboard.port
            assert test[4] == f"http://127.0.0.1:{port}/healthz"
        else:
            assert name == "postgres" and "pg_isready" in test


def test_split_tls_files_are_what_make_certs_makes(tmp_path: Path) -> None:
    """The secrets the split files mount are the files deploy/make-certs.sh writes, and the TLS flags use them."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    certs = tmp_path / "certs"
    subprocess.run(["bash", str(cf.DEPLOY / "make-certs.sh"), str(certs), "--hosts", "lada.example.org,127.0.0.1",
                    "--clients", "client-1 client-2 client-3 healthcheck"], check=True, capture_output=True,
                   timeout=120)
    env = {**ENV, "LADA_CERTS": str(certs)}
    tls_flags = {"server": {"--transport.tls_cert", "--transport.tls_key", "--transport.tls_client_ca"},
                 "client": {"--client.tls_ca", "--client.tls_cert", "--client.tls_key"}}
    for project, role in (("split-server", "server"), ("split-client", "client")):
        doc = cf.load(PROJECTS[project], env)
        svc = doc["services"][role]
        cmd = svc["command"]
        for flag in tls_flags[role]:
            path = cmd[cmd.index(flag) + 1]
            host = cf.host_path(doc, svc, path)
            assert host is not None, f"{role} {flag} {path} is not a mounted secret"
            if host.parent.name != "secrets":
                assert host.is_file(), f"{role} {flag}: {host} is not made by make-certs.sh"
        for name, path in cf.secret_files(doc).items():
            if name.endswith((".pem", ".key")):
                assert path.is_file(), f"secret {name}: {path} is not made by make-certs.sh"
        if role == "server":  # the health check speaks mutual TLS with its own client certificate
            for key in ("LADA_HEALTH_TLS_CA", "LADA_HEALTH_TLS_CERT", "LADA_HEALTH_TLS_KEY"):
                host = cf.host_path(doc, svc, svc["environment"][key])
                assert host is not None and host.is_file(), key


# --------------------------------------------------------------------------- images
def _base_block(path: Path) -> str:
    text = path.read_text()
    return text[text.index("FROM "):text.index("# ---- end of shared base")]


def test_dockerfiles_share_one_base_and_never_download_at_run_time() -> None:
    files = [cf.DEPLOY / f"{s}.Dockerfile" for s in ("server", "client", "dashboard")]
    blocks = {_base_block(f) for f in files}
    assert len(blocks) == 1, "the shared base block differs between the Dockerfiles"
    base = blocks.pop()
    assert base.startswith("FROM python:3.11-slim")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in base
    assert 'ENTRYPOINT ["/opt/lada/entrypoint.sh"]' in base
    env = cf.dockerfile_env(files[0])
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    for f in files:
        assert "USER lada" in f.read_text()
    ignore = (ROOT / ".dockerignore").read_text().split()
    for copied in ("pyproject.toml", "README.md", "lada/", "common/", "server/", "client/", "deploy/entrypoint.sh",
                   "deploy/healthcheck.py"):
        assert f"!{copied}" in ignore, f".dockerignore hides {copied} from the build"


def _entrypoint(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("LADA_")}
    return subprocess.run(["sh", str(cf.DEPLOY / "entrypoint.sh"), *args], capture_output=True, text=True,
                          env={**base, "PATH": path, **env}, timeout=timeout)


def test_entrypoint_db_url_secret_and_baked_models(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://lada:pw@db:5432/lada\n")
    baked, cache = tmp_path / "baked", tmp_path / "cache"
    (baked / "llm-abc").mkdir(parents=True)
    (baked / "llm-abc" / "lada_build.json").write_text("{}")
    (cache / "slm-def").mkdir(parents=True)
    show = "import os; print(os.environ['LADA_SERVER__DB'])"
    res = _entrypoint([sys.executable, "-c", show],
                      {"LADA_DB_URL_FILE": str(secret), "LADA_MODELS__CACHE_DIR": str(cache),
                       "LADA_BAKED_MODELS": str(baked)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "postgresql://lada:pw@db:5432/lada"
    assert (cache / "llm-abc" / "lada_build.json").is_file(), "baked models seed the cache"
    assert sorted(p.name for p in cache.iterdir()) == ["llm-abc", "slm-def"], "no temporary folders left"


def test_entrypoint_builds_the_models_of_the_commands_config(tmp_path: Path, model_cache: Path) -> None:
    """First start: `lada models build` with the command's own --config fills the shared cache."""
    res = _entrypoint([sys.executable, "-c", "print('started')", "--config", str(TINY)],
                      {"LADA_BUILD_MODELS": "all", "LADA_MODELS__CACHE_DIR": str(model_cache)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("started")
    cfg = LadaConfig.load(TINY, {"models.cache_dir": str(model_cache)}, env=False)
    for name in {cfg.models.llm, *cfg.models.clients.values()}:
        assert (model_dir(name, cfg.models, cfg.data.seed) / "lada_build.json").is_file(), name


def test_healthcheck_script_against_real_services(tmp_path: Path) -> None:
    """/healthz of a real `lada dashboard`; a gRPC probe of a port nobody serves fails fast."""
    port = free_port()
    dead = subprocess.run([sys.executable, str(HEALTHCHECK), "grpc", f"127.0.0.1:{free_port()}", "--timeout", "2"],
                          capture_output=True, timeout=60)
    assert dead.returncode == 1
    dash = subprocess.Popen(_cli("dashboard", "--server.db", f"sqlite:///{tmp_path / 'lada.db'}",
                                 "--dashboard.port", str(port)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        deadline = time.time() + 60
        while subprocess.run([sys.executable, str(HEALTHCHECK), "http", url, "--timeout", "2"],
                             capture_output=True, timeout=60).returncode != 0:
            assert dash.poll() is None and time.time() < deadline, "dashboard never became healthy"
            time.sleep(0.5)
    finally:
        dash.terminate()
        dash.wait(timeout=30)
    down = subprocess.run([sys.executable, str(HEALTHCHECK), "http", url, "--timeout", "2"], capture_output=True,
                          timeout=60)
    assert down.returncode == 1
