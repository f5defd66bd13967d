"""The image and the compose stack, run on a real Docker engine.

docker/local/engine.sh gives the module its engine: one that answers, or on a root host with
apt-get, Debian's docker.io started as `dockerd --bridge=none --iptables=false` (no bridge
network: every container is on the host's network, every address on loopback) and the base
image built from Debian's packages (kept in the engine, so only the first run pays for it).
Where there is no engine and none can be started, every test here skips with the reason.

The image is built once from the tracked files (what a clean checkout has); `regrow demo` runs
in it; then the stack of docker/compose.yaml comes up with docker/compose.host.yaml (each
service on a free loopback port, its own PostgreSQL beside the host's), its secrets in an env
file made for the run. A signed webhook is admitted by the webhook container, trained by the
serve container's deployment and promoted on the MLflow server, whose store is the stack's
PostgreSQL; a request without the login is refused by each server; the stack goes down with
its volumes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.procs import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
IMAGE = "regrow:test"
PG_IMAGE = "regrow-postgres:15"
MODEL = "rainfall-binary"  # configs/rainfall.yaml, the config the stack serves by default

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


# The classic builder: it says how large the build context is, and needs no buildx plugin.
BUILD_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}


def _run(argv: list[str], timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def _check(out: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert out.returncode == 0, \
        f"{what} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


# --- engine and images ------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> str:
    """The base image's name, once an engine answers (docker/local/engine.sh); skips saying
    why where no engine can be had."""
    started = time.monotonic()
    out = _run(["sh", str(DOCKER / "local" / "engine.sh")], timeout=900)
    if out.returncode == 3:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    _check(out, "docker/local/engine.sh")
    print(f"engine ready in {time.monotonic() - started:.0f} s")
    return out.stdout.strip().splitlines()[-1]


def _clean_checkout(dest: Path) -> Path:
    """The tracked files of the work tree, as a fresh clone of it would have them."""
    listed = _check(_run(["git", "ls-files", "-z"], cwd=ROOT), "git ls-files").stdout
    for rel in filter(None, listed.split("\0")):
        src, out = ROOT / rel, dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # regrow/configs, regrow/flows, regrow/tasks
            out.symlink_to(os.readlink(src))
        elif src.is_file():  # a tracked file deleted in the work tree is gone from a checkout too
            shutil.copy2(src, out)
    return dest


@dataclass
class Built:
    image: str
    base: str
    context_bytes: int
    seconds: float


@pytest.fixture(scope="module")
def image(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """regrow:test, built from a clean checkout on the host's network (layers cached by the
    engine: the dependency layer is rebuilt only when the dependencies or the lock change).
    The PostgreSQL stand-in (docker/local/postgres: no registry to pull `postgres` from) is
    built alongside, mostly waiting on downloads as the image does."""
    checkout = _clean_checkout(tmp_path_factory.mktemp("checkout"))
    started = time.monotonic()
    pg = subprocess.Popen(["docker", "build", "--network", "host", "--build-arg",
                           f"BASE_IMAGE={engine}", "-t", PG_IMAGE, str(DOCKER / "local" / "postgres")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=BUILD_ENV)
    try:
        out = _check(_run(["docker", "build", "--network", "host", "-f", "docker/Dockerfile",
                           "--build-arg", f"BASE_IMAGE={engine}", "-t", IMAGE, "."],
                          cwd=checkout, timeout=1500, env=BUILD_ENV), "docker build of the image")
        pg_out, _ = pg.communicate(timeout=900)
    finally:
        if pg.poll() is None:
            pg.kill()
            pg.wait()
    assert pg.returncode == 0, f"docker build of the PostgreSQL image failed:\n{pg_out[-3000:]}"
    seconds = time.monotonic() - started
    sent = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", out.stdout)
    size = (int(float(sent.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[sent.group(2)])
            if sent else -1)
    print(f"images built in {seconds:.0f} s, context {size} bytes")
    return Built(IMAGE, engine, size, seconds)


def test_image_builds_from_a_clean_checkout_with_a_small_context(image: Built):
    assert 0 < image.context_bytes < 5_000_000, image.context_bytes  # the .venv alone is > 1 GB
    labels = _check(_run(["docker", "image", "inspect", image.image, "--format",
                          "{{json .Config}}"]), "docker image inspect")
    config = json.loads(labels.stdout)
    assert config["User"] == "regrow" and "REGROW_HOME=/var/lib/regrow" in config["Env"]


def test_image_runs_as_a_non_root_user_without_dev_tools(image: Built):
    probe = ("import importlib.util as u, os; print(os.getuid(), "
             f"[m for m in {['pytest', 'ruff', 'uv', 'mypy']!r} if u.find_spec(m)])")
    run = _check(_run(["docker", "run", "--rm", "--network", "host", image.image, "sh", "-c",
                       'regrow --help >/dev/null && exec python -c "$0"', probe]), "docker run")
    assert run.stdout.strip() == "10001 []"


def test_demo_runs_inside_the_image(image: Built):
    out = _check(_run(["docker", "run", "--rm", "--network", "host", "-e", "REGROW_PROGRESS=0",
                       image.image, "regrow", "demo"], timeout=600), "regrow demo in the image")
    text = out.stdout + out.stderr
    assert "champion" in text, text[-2000:]


# --- the compose stack ------------------------------------------------------------------


def _compose_cli() -> list[str]:
    if _run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed "
                "(docker/local/engine.sh installs Debian's docker-compose)")


@dataclass
class Stack:
    env: dict[str, str]
    base: list[str]  # the compose command line up to the subcommand
    project: str

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return _run([*self.base, *args], timeout=timeout, env=self.process_env())

    def process_env(self) -> dict[str, str]:
        # Nothing of the caller's shell leaks in: the env file decides (compose gives the
        # shell's variables precedence over the file's).
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("REGROW_", "PREFECT_", "MLFLOW_", "POSTGRES_", "COMPOSE_"))}
        return keep

    def url(self, name: str) -> str:
        port = {"prefect": "PREFECT_PORT", "mlflow": "MLFLOW_PORT",
                "webhook": "REGROW_WEBHOOK_PORT"}[name]
        return f"http://127.0.0.1:{self.env[port]}"

    def container(self, service: str) -> str:
        out = _check(self.compose("ps", "-q", service), f"compose ps {service}")
        return out.stdout.strip().splitlines()[0]

    def logs(self, service: str) -> str:
        out = _run(["docker", "logs", self.container(service)])
        return out.stdout + out.stderr


def _networks() -> set[str]:
    return set(_check(_run(["docker", "network", "ls", "-q"]), "docker network ls").stdout.split())


@pytest.fixture(scope="module")
def stack(image: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack on the host's network, each server on a free loopback port; down with its
    volumes afterwards."""
    cli = _compose_cli()
    project = f"regrowtest{uuid.uuid4().hex[:8]}"
    env = {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "PREFECT_SERVER_API_AUTH_STRING": f"regrow:{secrets.token_hex(16)}",
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_hex(16),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        "REGROW_WEBHOOK_SECRET": secrets.token_hex(32),
        "REGROW_IMAGE": image.image,
        "REGROW_POSTGRES_IMAGE": PG_IMAGE,
        "POSTGRES_PORT": str(free_port()),
        "PREFECT_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "REGROW_WEBHOOK_PORT": str(free_port()),
        "REGROW_CONFIG_DIR": str(ROOT / "configs"),
    }
    assert len(set(env[k] for k in env if k.endswith("_PORT"))) == 4
    env_file = tmp_path_factory.mktemp("stack") / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    st = Stack(env, [*cli, "-p", project, "--project-directory", str(DOCKER), "--env-file",
                     str(env_file), "-f", str(DOCKER / "compose.yaml"), "-f",
                     str(DOCKER / "compose.host.yaml")], project)
    before = _networks()
    started = time.monotonic()
    try:
        up = st.compose("up", "-d", "--no-build", timeout=600)
        _check(up, "compose up")
        print(f"stack up in {time.monotonic() - started:.0f} s")
        assert _networks() == before, "the stack created a network"
        yield st
    finally:
        st.compose("down", "-v", "--remove-orphans", timeout=300)


def _wait(check, timeout: float, what: str, every: float = 2.0):
    return wait_for(check, timeout, f"{what}: not within {timeout:.0f} s", interval=every)


def _pg_url(st: Stack, database: str, password: str | None = None) -> str:
    pw = st.env["POSTGRES_PASSWORD"] if password is None else password
    return f"postgresql://regrow:{pw}@127.0.0.1:{st.env['POSTGRES_PORT']}/{database}"


def test_every_service_runs_on_the_host_network_on_loopback(stack: Stack):
    for service in ("postgres", "prefect", "mlflow", "serve", "webhook"):
        mode = _check(_run(["docker", "inspect", "--format", "{{.HostConfig.NetworkMode}}",
                            stack.container(service)]), "docker inspect").stdout.strip()
        assert mode == "host", (service, mode)
    _wait(lambda: _answers(f"{stack.url('webhook')}/healthz"), 240, "the webhook receiver")
    listening = Path("/proc/net/tcp").read_text()
    for name in ("PREFECT_PORT", "MLFLOW_PORT", "REGROW_WEBHOOK_PORT", "POSTGRES_PORT"):
        port = f"{int(stack.env[name]):04X}"
        # state 0A = LISTEN; 0100007F = 127.0.0.1 (no wildcard 00000000 listener)
        rows = [r.split() for r in listening.splitlines()[1:]]
        addrs = {r[1].split(":")[0] for r in rows if r[1].endswith(f":{port}") and r[3] == "0A"}
        assert addrs == {"0100007F"}, (name, addrs)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_each_server_refuses_a_request_without_the_login(stack: Stack):
    import httpx
    import psycopg

    prefect, mlflow = stack.url("prefect"), stack.url("mlflow")
    anonymous = httpx.post(f"{prefect}/api/flow_runs/filter", json={}, timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    wrong = httpx.post(f"{prefect}/api/flow_runs/filter", json={}, auth=("regrow", "wrong"),
                       timeout=30)
    assert wrong.status_code == 401
    user, password = stack.env["PREFECT_SERVER_API_AUTH_STRING"].split(":", 1)
    assert httpx.post(f"{prefect}/api/flow_runs/filter", json={}, auth=(user, password),
                      timeout=30).status_code == 200

    search = f"{mlflow}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(search, timeout=30).status_code == 401
    assert httpx.get(search, auth=("admin", "wrong"), timeout=30).status_code == 401
    assert httpx.get(search, auth=("admin", stack.env["MLFLOW_AUTH_ADMIN_PASSWORD"]),
                     timeout=30).status_code == 200

    for password in ("", "wrong"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(_pg_url(stack, "regrow", password), connect_timeout=10).close()
    with psycopg.connect(_pg_url(stack, "regrow"), connect_timeout=10) as conn:
        assert conn.execute("select current_user").fetchone() == ("regrow",)


def test_every_regrow_container_is_handed_the_logins(stack: Stack):
    for service in ("serve", "webhook"):
        raw = _check(_run(["docker", "inspect", "--format", "{{json .Config.Env}}",
                           stack.container(service)]), "docker inspect").stdout
        env = dict(item.split("=", 1) for item in json.loads(raw))
        assert env["PREFECT_API_AUTH_STRING"] == stack.env["PREFECT_SERVER_API_AUTH_STRING"]
        assert env["MLFLOW_TRACKING_PASSWORD"] == stack.env["MLFLOW_AUTH_ADMIN_PASSWORD"]
        assert f":{stack.env['POSTGRES_PASSWORD']}@127.0.0.1:{stack.env['POSTGRES_PORT']}/" \
            in env["REGROW_DATABASE_URL"]


def test_signed_webhook_is_trained_in_serve_and_promoted_on_mlflow(stack: Stack):
    import httpx
    import psycopg

    from regrow.app.webhook import sign

    webhook = stack.url("webhook")
    _wait(lambda: _answers(f"{webhook}/healthz"), 240, "the webhook receiver")
    body = json.dumps({"model": MODEL, "reason": "container test"}).encode()
    unsigned = httpx.post(f"{webhook}/v1/hooks/retrain", content=body, timeout=60)
    assert unsigned.status_code == 401
    headers = sign(stack.env["REGROW_WEBHOOK_SECRET"], body, int(time.time()),
                   delivery_id=uuid.uuid4().hex)
    sent = time.monotonic()
    answer = httpx.post(f"{webhook}/v1/hooks/retrain", content=body, headers=headers, timeout=60)
    assert answer.status_code == 202, answer.text
    assert answer.json()["verdict"] == "admitted"

    # The champion alias, read from the MLflow server's store: the stack's PostgreSQL.
    def champion() -> tuple[str, str] | None:
        with psycopg.connect(_pg_url(stack, "mlflow"), connect_timeout=10) as conn:
            row = conn.execute(
                "select a.version, v.run_id from registered_model_aliases a join model_versions v"
                " on v.name = a.name and v.version = a.version"
                " where a.name = %s and a.alias = 'champion'", (MODEL,)).fetchone()
        return (str(row[0]), row[1]) if row else None

    version, run_id = _wait(champion, 420, "the champion alias on the MLflow server", every=3)
    print(f"webhook -> champion v{version} in {time.monotonic() - sent:.0f} s")

    # ... the same through the MLflow server, with the login every regrow container has
    search = httpx.get(f"{stack.url('mlflow')}/api/2.0/mlflow/registered-models/get",
                       params={"name": MODEL}, timeout=30,
                       auth=("admin", stack.env["MLFLOW_AUTH_ADMIN_PASSWORD"]))
    aliases = {a["alias"]: a["version"] for a in search.json()["registered_model"]["aliases"]}
    assert aliases["champion"] == version

    # trained by the serve container's deployment (a Prefect run of train-rainfall-binary),
    prefect, login = stack.url("prefect"), tuple(
        stack.env["PREFECT_SERVER_API_AUTH_STRING"].split(":", 1))
    deployment = httpx.get(f"{prefect}/api/deployments/name/regrow-train-request/train-{MODEL}",
                           auth=login, timeout=30)
    assert deployment.status_code == 200, deployment.text

    def completed() -> list[dict]:
        runs = httpx.post(f"{prefect}/api/flow_runs/filter", auth=login, timeout=30, json={
            "flow_runs": {"deployment_id": {"any_": [deployment.json()["id"]]}}}).json()
        return [r for r in runs if r["state_type"] == "COMPLETED"]

    _wait(completed, 120, "the served training run to complete")
    assert run_id in stack.logs("serve")
    assert run_id not in stack.logs("webhook")
    # ... and recorded in the monitoring store, on the same PostgreSQL: the request, and the
    # alias move with the MLflow run that trained the champion
    with psycopg.connect(_pg_url(stack, "regrow"), connect_timeout=10) as conn:
        request = conn.execute("select kind, verdict from retrain_requests where id = %s",
                               (answer.json()["request_id"],)).fetchone()
        moved = conn.execute("select new_version, run_id from alias_history where model = %s"
                             " and alias = 'champion' order by id desc", (MODEL,)).fetchone()
    assert request is not None and request[1] == "admitted", request
    assert moved == (version, run_id), moved


def test_stack_goes_down_with_its_volumes(stack: Stack):
    volumes = lambda: set(_check(_run(["docker", "volume", "ls", "-q", "--filter",  # noqa: E731
                                       f"label=com.docker.compose.project={stack.project}"]),
                                 "docker volume ls").stdout.split())
    assert volumes()  # pgdata, mlartifacts, regrow-home
    _check(stack.compose("down", "-v", "--remove-orphans", timeout=300), "compose down -v")
    assert volumes() == set()
    left = _run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"])
    assert left.stdout.split() == []

