"""The deployment files: docker/ (image, compose stack), .dockerignore, infra/ (env example,
process and Kubernetes work pools). Static checks run everywhere; the work-pool tests use the
session's Prefect server. The image and the stack run in tests/test_containers.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
COMPOSE_HOST = ROOT / "docker" / "compose.host.yaml"
COMPOSE_PORTS = ROOT / "docker" / "compose.ports.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENV_EXAMPLE = ROOT / "infra" / "env.example"
PROCESS_YAML = ROOT / "infra" / "prefect.yaml"
K8S_YAML = ROOT / "infra" / "k8s" / "prefect.yaml"
K8S_TEMPLATE = ROOT / "infra" / "k8s" / "base-job-template.json"
REGROW_SERVICES = ("prefect", "mlflow", "demo-data", "serve", "webhook", "worker", "trainer")
CLIENTS = ("serve", "webhook", "worker", "trainer")  # regrow processes that call the servers
# The stack's secrets: compose refuses to start without each of them.
SECRETS = ("POSTGRES_PASSWORD", "PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_AUTH_ADMIN_PASSWORD",
           "MLFLOW_FLASK_SERVER_SECRET_KEY", "REGROW_WEBHOOK_SECRET")
DEV_TOOLS = ("pytest", "pytest-timeout", "ruff", "iniconfig")
VAR = re.compile(r"\b(?:REGROW|PREFECT|MLFLOW)_[A-Z0-9_]*[A-Z0-9]\b")


def _compose(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text())


def _default(value: str) -> str:
    """The default of a compose `${NAME:-default}` value (the value itself otherwise)."""
    m = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return m.group(1) if m else value


def _listed() -> dict[str, str]:
    """Variables in infra/env.example (set or commented out as #NAME=default)."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"#?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            assert m.group(1) not in out, f"{m.group(1)} listed twice in infra/env.example"
            out[m.group(1)] = m.group(2)
    return out


def _dockerfile_steps() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# --- compose ------------------------------------------------------------------------------


def test_compose_has_every_service_of_the_stack():
    services = _compose()["services"]
    assert {"postgres", *REGROW_SERVICES} <= set(services)
    for name in REGROW_SERVICES:  # one image for every regrow process, built from the Dockerfile
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile", name
        assert services[name]["image"] == "${REGROW_IMAGE:-regrow:latest}", name
    assert services["serve"]["command"].startswith("regrow serve ")
    assert services["webhook"]["command"].startswith("regrow webhook ")
    assert "--host 0.0.0.0" in services["webhook"]["command"]
    assert services["prefect"]["command"][:3] == ["prefect", "server", "start"]
    assert services["mlflow"]["command"][:2] == ["mlflow", "server"]
    assert "prefect worker start --pool regrow-process" in services["worker"]["command"][-1]
    assert "infra/prefect.yaml" in services["worker"]["command"][-1]


def test_compose_regrow_processes_reach_the_servers_by_service_name():
    services = _compose()["services"]
    for name in ("serve", "webhook", "worker", "trainer"):
        env = services[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect:4200/api", name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["REGROW_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert "@postgres:5432/regrow" in env["REGROW_DATABASE_URL"], name
        deps = services[name]["depends_on"]
        for server in ("postgres", "prefect", "mlflow"):
            assert deps[server] == {"condition": "service_healthy"}, (name, server)
    assert services["worker"]["environment"]["REGROW_DISPATCH"] == "events"
    for server in ("postgres", "prefect", "mlflow", "webhook"):
        assert "healthcheck" in services[server], server


def test_mlflow_server_answers_the_host_the_other_containers_use():
    """MLflow 3 answers 403 Invalid Host header unless the Host is allowed; checked with
    MLflow's own matcher on the compose default."""
    from mlflow.server.security_utils import is_allowed_host_header

    env = _compose()["services"]["mlflow"]["environment"]
    hosts = [h.strip() for h in _default(env["MLFLOW_SERVER_ALLOWED_HOSTS"]).split(",")]
    host = _compose()["services"]["serve"]["environment"]["MLFLOW_TRACKING_URI"].split("//")[1]
    assert is_allowed_host_header(hosts, host), (host, hosts)
    assert is_allowed_host_header(hosts, "localhost:5000")  # the browser, on the published port
    assert not is_allowed_host_header(hosts, "attacker.example:5000")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_compose_volumes_are_writable_by_the_image_user():
    """Named volumes mount at the image's own state directory (owned by the service user), so
    a fresh volume starts writable; a subdirectory would be created root-owned."""
    compose = _compose()
    named = set(compose["volumes"])
    home = next(v for k, v in _dockerfile_steps() if k == "ENV" and "REGROW_HOME=" in v)
    home = re.search(r"REGROW_HOME=(\S+)", home).group(1)
    for name in REGROW_SERVICES:
        for spec in compose["services"][name].get("volumes", []):
            source, target = spec.split(":")[:2]
            if source in named:
                assert target == home, (name, spec)
    mlflow = compose["services"]["mlflow"]["command"]
    assert f"--artifacts-destination={home}/mlartifacts" in mlflow


def test_compose_demo_data_writes_what_the_shipped_config_reads(tmp_path, monkeypatch):
    from regrow.app.demo import write_demo_data
    from regrow.configs.schema import load_config

    services = _compose()["services"]
    script = services["demo-data"]["command"][-1]
    assert "write_demo_data(Path('/var/lib/regrow'))" in script
    assert "test -s /var/lib/regrow/demo/rainfall.csv" in script
    assert services["serve"]["depends_on"]["demo-data"] == {
        "condition": "service_completed_successfully"}
    written = write_demo_data(tmp_path)["all"]
    monkeypatch.setenv("REGROW_HOME", str(tmp_path))
    loaded = load_config(ROOT / "configs" / "rainfall.yaml")
    assert loaded.resolve_path(loaded.config.data.source.path) == written
    assert written.stat().st_size > 0


def test_compose_points_to_a_readme_section_that_exists():
    pointers = re.findall(r'README, "([^"]+)"', COMPOSE.read_text())
    assert pointers
    headings = {h.strip() for h in re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.M)}
    for title in pointers:
        assert title in headings, title


def test_every_compose_variable_is_in_env_example():
    used = set()
    for path in (COMPOSE, COMPOSE_HOST, COMPOSE_PORTS):
        used |= set(re.findall(r"\$\{(\w+)", path.read_text()))
    assert set(SECRETS) <= used
    assert used - set(_listed()) == set()


def test_compose_secrets_are_required_and_the_servers_need_a_login():
    """No default password: each secret is `${NAME:?...}` wherever it is used; the servers run
    with their login and every regrow process that calls them is handed it."""
    text = COMPOSE.read_text() + COMPOSE_HOST.read_text()
    for name in SECRETS:
        uses = re.findall(rf"\$\{{{name}(:[?-]|}})", text)
        assert uses and all(u == ":?" for u in uses), (name, uses)
    services = _compose()["services"]
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert services["mlflow"]["working_dir"] == "/var/lib/regrow"  # its user store: the volume
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(
        services["mlflow"]["environment"])
    assert "PREFECT_SERVER_API_AUTH_STRING" in services["prefect"]["environment"]
    for name in CLIENTS:
        env = services[name]["environment"]
        assert env["PREFECT_API_AUTH_STRING"].startswith("${PREFECT_SERVER_API_AUTH_STRING:?"), name
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_AUTH_ADMIN_PASSWORD:?"), name
        assert env["MLFLOW_TRACKING_USERNAME"] == services["mlflow"]["environment"][
            "MLFLOW_AUTH_ADMIN_USERNAME"], name


def test_compose_host_variant_keeps_every_service_on_loopback():
    """docker/compose.host.yaml: every service on the host's network (no bridge network is
    created), each server bound to 127.0.0.1 on a port of its own; no published ports anywhere
    but in docker/compose.ports.yaml (Compose refuses them with the host's network)."""
    base, host = _compose()["services"], _compose(COMPOSE_HOST)["services"]
    assert set(host) == set(base)
    assert {name: s.get("network_mode") for name, s in host.items()} == {
        name: "host" for name in base}
    assert not [name for name, s in {**base, **host}.items() if "ports" in s]
    assert set(_compose(COMPOSE_PORTS)["services"]) == {"prefect", "mlflow", "webhook", "predict"}
    assert "networks" not in _compose(COMPOSE_HOST)
    text = COMPOSE_HOST.read_text()
    assert "0.0.0.0" not in text and not re.search(r"\b(10|172|192)\.\d+\.\d+\.\d+", text)
    assert host["postgres"]["command"] == ["postgres", "-c", "listen_addresses=127.0.0.1"]
    assert host["postgres"]["environment"]["PGPORT"] == "${POSTGRES_PORT:-5433}"
    assert "--host=127.0.0.1" in host["mlflow"]["command"]
    assert host["prefect"]["command"][3:5] == ["--host", "127.0.0.1"]
    assert "--host 127.0.0.1" in host["webhook"]["command"]
    ports = {"PREFECT_PORT": "4200", "MLFLOW_PORT": "5000", "POSTGRES_PORT": "5433",
             "REGROW_WEBHOOK_PORT": "8787", "REGROW_PREDICT_PORT": "8790"}
    for name in CLIENTS:
        env = {**base[name]["environment"], **host[name]["environment"]}
        assert env["PREFECT_API_URL"] == "http://127.0.0.1:${PREFECT_PORT:-4200}/api", name
        assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:${MLFLOW_PORT:-5000}", name
        assert "@127.0.0.1:${POSTGRES_PORT:-5433}/regrow" in env["REGROW_DATABASE_URL"], name
    for var, default in ports.items():  # one default per port, the one env.example shows
        assert set(re.findall(rf"\$\{{{var}:-(\d+)\}}", text + COMPOSE_PORTS.read_text())) == \
            {default}, var
        assert _listed()[var] == default, var


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_docker_compose_config_accepts_the_file(tmp_path):
    """`docker compose config` (no engine needed): valid, and the webhook secret is required."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {k: v for k, v in os.environ.items() if k not in _listed()}
    env["DOCKER_CONFIG"] = str(tmp_path)
    empty = tmp_path / "empty.env"  # not a developer's docker/.env
    empty.write_text("")
    base = [*cli, "--project-directory", str(ROOT / "docker"), "--env-file", str(empty),
            "-f", str(COMPOSE)]
    values = {name: f"test-{name.lower()}" for name in SECRETS}
    for name in SECRETS:  # each secret is required
        missing = subprocess.run([*base, "config"], capture_output=True, text=True,
                                 env={**env, **{k: v for k, v in values.items() if k != name}})
        assert missing.returncode != 0 and name in missing.stderr, (name, missing.stderr)
    env.update(values)
    for override in (COMPOSE_PORTS, COMPOSE_HOST):
        out = subprocess.run([*base, "-f", str(override), "--profile", "worker", "--profile",
                              "manual", "config"], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        resolved = yaml.safe_load(out.stdout)["services"]
        assert {"postgres", *REGROW_SERVICES} <= set(resolved)
        assert resolved["webhook"]["environment"]["REGROW_WEBHOOK_SECRET"] == \
            values["REGROW_WEBHOOK_SECRET"]
        assert resolved["serve"]["environment"]["PREFECT_API_AUTH_STRING"] == \
            values["PREFECT_SERVER_API_AUTH_STRING"]


# --- image --------------------------------------------------------------------------------


def test_dockerfile_installs_no_dev_tools_and_runs_as_a_user():
    steps = _dockerfile_steps()
    after_from = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    users = [v for k, v in after_from if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(v for k, v in after_from if k == "RUN")
    # the runtime requirements: [project].dependencies, extracted by the first stage
    first = [v for k, v in steps[:max(i for i, (k, _) in enumerate(steps) if k == "FROM")]
             if k == "RUN"]
    assert any("['project']['dependencies']" in v and "> /requirements.txt" in v for v in first)
    assert "COPY" in dict(after_from) and any(
        v.startswith("--from=requirements /requirements.txt ") for k, v in after_from if k == "COPY")
    assert "-r /tmp/requirements.txt -c /tmp/requirements.lock" in runs
    assert "pip sync" not in runs and "pyproject.toml" not in runs.split("-e .")[0]
    assert "[dev]" not in runs and "--extra" not in runs and "--all-extras" not in runs
    assert "pip uninstall" in runs and " uv" in runs  # the installer leaves with the build
    assert not any(k == "ENTRYPOINT" for k, _ in after_from)  # workers set the command
    assert re.search(rf"useradd [^&]*\b{users[-1]}\b", runs)  # created in the image
    for src in _copied():
        assert (ROOT / src).exists(), src


def _copied() -> list[str]:
    """What the Dockerfile's COPY steps take from the build context (not from a stage)."""
    return [src for k, v in _dockerfile_steps() if k == "COPY" and not v.startswith("--from=")
            for src in v.split()[:-1]]


def test_dependency_layer_comes_before_the_source():
    """The slow layer (installing the dependencies) copies only the requirements and the lock,
    so an edit to the source or to pyproject.toml's other tables reuses it."""
    steps = _dockerfile_steps()
    install = next(i for i, (k, v) in enumerate(steps) if k == "RUN" and "requirements.lock" in v)
    before = [v.split()[:-1] for k, v in steps[:install] if k == "COPY"]
    after = [src for k, v in steps[install:] if k == "COPY" for src in v.split()[:-1]]
    assert before == [["pyproject.toml"], ["--from=requirements", "/requirements.txt"],
                      ["requirements.lock"]]
    assert {"regrow", "tasks", "flows", "configs", "pyproject.toml"} <= set(after)


def test_dev_tools_are_not_runtime_dependencies():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    def names(specs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in specs}

    runtime, dev = names(project["dependencies"]), names(project["optional-dependencies"]["dev"])
    assert {"pytest", "ruff"} <= dev and not (runtime & dev)


def test_image_requirements_resolve_to_locked_versions_without_dev_tools(tmp_path):
    """What the Dockerfile's `uv pip install -r pyproject.toml -c requirements.lock` installs:
    resolved by uv against the package index (skipped when the index cannot be reached)."""
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists():
        pytest.skip("uv is not installed in this environment (make setup installs it)")
    out = tmp_path / "runtime.txt"
    res = subprocess.run([str(uv), "pip", "compile", "-q", "--python", sys.executable,
                          "pyproject.toml", "-c", "requirements.lock", "--no-header",
                          "--no-annotate", "-o", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    if res.returncode != 0 and re.search(r"(?i)network|connect|dns|timed out", res.stderr):
        pytest.skip(f"the package index cannot be reached: {res.stderr.strip()[-200:]}")
    assert res.returncode == 0, res.stderr
    pins = dict(line.split("==") for line in out.read_text().split() if "==" in line)
    locked = dict(re.match(r"([^=\s]+)==(\S+)", line).groups()
                  for line in (ROOT / "requirements.lock").read_text().splitlines()
                  if re.match(r"[^#\s].*==", line))
    assert "prefect" in pins and "mlflow" in pins and len(pins) > 100
    assert not set(DEV_TOOLS) & set(pins), set(DEV_TOOLS) & set(pins)
    assert {k: v for k, v in pins.items() if locked.get(k) != v} == {}


def test_dockerignore_keeps_the_context_small_but_complete():
    patterns = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch(path, p) or path.startswith(p + "/") for p in patterns)

    for heavy in (".venv", ".git", ".venv/lib/python3.11/site-packages/x.py", "docker/.env"):
        assert ignored(heavy), heavy
    copied = _copied()
    assert copied and not [src for src in copied if ignored(src)]


# --- env.example --------------------------------------------------------------------------


def test_env_example_lists_every_variable_the_code_reads():
    listed = _listed()
    read = set()
    for folder in ("configs", "tasks", "flows"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(VAR.findall(path.read_text()))
    assert {"REGROW_HOME", "REGROW_DATABASE_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL",
            "REGROW_WEBHOOK_SECRET", "REGROW_WEBHOOK_SECRET_PREVIOUS", "REGROW_DISPATCH"} <= read
    assert sorted(read - set(listed)) == []
    for name in ("REGROW_WEBHOOK_SECRET", "REGROW_WEBHOOK_SECRET_PREVIOUS", "REGROW_DISPATCH",
                 "REGROW_SOURCE_DIR", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        assert name in listed, name


def test_env_example_explains_each_variable():
    """Each variable has a comment line above it (or above its group)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"#?[A-Z][A-Z0-9_]*=", line):
            above = lines[:i]
            assert above and any(a.startswith("# ") for a in above[-4:]), line
        elif line.strip():
            assert line.startswith("#"), f"not a variable nor a comment: {line!r}"


# --- work pools ---------------------------------------------------------------------------


def _prefect_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_prefect_yaml_entrypoints_exist_and_need_no_variable_on_workers():
    listed = set(_listed())
    for path in (PROCESS_YAML, K8S_YAML):
        doc = _prefect_yaml(path)
        assert doc["deployments"], path
        for dep in doc["deployments"]:
            file, func = dep["entrypoint"].split(":")
            assert (ROOT / file).is_file(), dep["entrypoint"]
            assert re.search(rf"^def {func}\(", (ROOT / file).read_text(), re.M), dep["entrypoint"]
            assert dep["work_pool"]["job_variables"]["env"]["REGROW_DISPATCH"] == "events"
        # pull steps run on the worker: no environment variable may be needed there
        pulls = json.dumps([doc.get("pull"), *[d.get("pull") for d in doc["deployments"]]])
        assert "{{ $" not in pulls, path
        for name in re.findall(r"\{\{\s*\$(\w+)", path.read_text()):
            assert name in listed, name
    process = _prefect_yaml(PROCESS_YAML)
    step = process["build"][0]["prefect.deployments.steps.run_shell_script"]
    assert process["pull"][0]["prefect.deployments.steps.set_working_directory"] == {
        "directory": f"{{{{ {step['id']}.stdout }}}}"}
    k8s = _prefect_yaml(K8S_YAML)
    assert k8s["pull"][0]["prefect.deployments.steps.set_working_directory"] == {"directory": "/app"}


def test_k8s_variant_declares_the_same_deployments():
    def strip(dep: dict) -> dict:
        return {k: v for k, v in dep.items() if k not in ("work_pool", "pull")}

    process = [strip(d) for d in _prefect_yaml(PROCESS_YAML)["deployments"]]
    k8s = _prefect_yaml(K8S_YAML)["deployments"]
    assert [strip(d) for d in k8s] == process
    assert {d["work_pool"]["name"] for d in k8s} == {"regrow-k8s"}


def test_k8s_base_job_template_has_what_the_worker_expects():
    from prefect.utilities.templating import find_placeholders

    template = json.loads(K8S_TEMPLATE.read_text())
    assert set(template) == {"job_configuration", "variables"}
    job, variables = template["job_configuration"], template["variables"]
    assert variables["type"] == "object"
    placeholders = {p.name for p in find_placeholders(json.dumps(job))}
    assert {"command", "env", "image", "namespace"} <= placeholders
    assert placeholders - set(variables["properties"]) == set()
    manifest = job["job_manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["name"] == "prefect-job" and container["args"] == "{{ command }}"
    assert "command" not in container  # the image has no ENTRYPOINT: args run as given
    assert container["workingDir"] == "/app"
    uid = re.search(r"--uid (\d+)", DOCKERFILE.read_text()).group(1)
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsNonRoot"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/regrow" in mounts
    assert variables["properties"]["env"]["default"]["REGROW_DISPATCH"] == "events"


def test_k8s_base_job_template_renders_with_prefect_kubernetes():
    """The manifest prefect-kubernetes' worker would submit (skipped without the package)."""
    pytest.importorskip("prefect_kubernetes", reason="prefect-kubernetes is not installed "
                        "(only Kubernetes workers need it)")
    import asyncio
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads(K8S_TEMPLATE.read_text())
    cfg = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        template, {"image": "registry.example/regrow:1"}, client=object()))
    cfg.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="r", flow_id=uuid.uuid4()))
    container = cfg.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/regrow:1"
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert {"name": "REGROW_DISPATCH", "value": "events"} in container["env"]


def _env(server: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REGROW_"))}
    env.update(PREFECT_API_URL=server, REGROW_HOME=str(home), PYTHONPATH=str(ROOT),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def _prefect(*args: str, env: dict, cwd: Path = ROOT, timeout: int = 300):
    out = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args],
                         capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_process_worker_runs_a_deployment_without_regrow_source_dir(prefect_server, tmp_path):
    """Deployed from the repo root with no variable set; a worker started elsewhere, with no
    REGROW_SOURCE_DIR, runs the drift check (no champion yet: it completes, saying so)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = _env(prefect_server, tmp_path / "home")
    assert "REGROW_SOURCE_DIR" not in env
    _prefect("work-pool", "create", "regrow-process", "--type", "process", "--overwrite", env=env)
    _prefect("deploy", "--all", "--prefect-file", "infra/prefect.yaml", env=env)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("regrow-drift-check/drift-check-rainfall-binary")
            assert dep.work_pool_name == "regrow-process"
            assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
                "directory": str(ROOT)}}]
            run = client.create_flow_run_from_deployment(dep.id)
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    _prefect("worker", "start", "--pool", "regrow-process", "--run-once", env=env,
             cwd=elsewhere, timeout=600)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
    assert state.is_completed(), (state.name, state.message)


@pytest.mark.slow
def test_k8s_work_pool_accepts_the_template_and_the_deployments(prefect_server, tmp_path):
    """The server validates the base job template; the deployments land in the pool with
    their image, environment and /app working directory."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = _env(prefect_server, tmp_path / "home")
    _prefect("work-pool", "create", "regrow-k8s", "--type", "kubernetes", "--overwrite",
             "--base-job-template", str(K8S_TEMPLATE), env=env)
    _prefect("deploy", "--all", "--prefect-file", "infra/k8s/prefect.yaml",
             env={**env, "REGROW_IMAGE": "registry.example/regrow:1"})
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            pool = client.read_work_pool("regrow-k8s")
            dep = client.read_deployment_by_name("regrow-train-request/train-rainfall-binary")
    assert pool.type == "kubernetes"
    assert pool.base_job_template == json.loads(K8S_TEMPLATE.read_text())
    assert dep.work_pool_name == "regrow-k8s"
    assert dep.job_variables["image"] == "registry.example/regrow:1"
    assert dep.job_variables["env"]["REGROW_DISPATCH"] == "events"
    assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "/app"}}]
