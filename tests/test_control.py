"""The local control plane: `regrow up`, `ps`, `down` with real Prefect and MLflow servers, real
`regrow serve` and webhook processes, on free ports and a temporary state directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
REGROW = [sys.executable, "-m", "regrow.app.cli"]
SECRET = "control-plane-test-secret-0123456789"
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
    env.update(REGROW_HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def run(args: list[str], home: Path, timeout: int = 400, **extra: str):
    return subprocess.run([*REGROW, *args], capture_output=True, text=True,
                          env=_env(home, **extra), cwd=ROOT, timeout=timeout)


def related(home: Path) -> set[int]:
    """Live processes whose environment or command line names this state directory."""
    mark, found = str(home).encode(), set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{name}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and (mark in cmd or mark in env):
            found.add(int(name))
    return found


def _kill_all(home: Path) -> None:
    for pid in related(home):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory):
    """One `regrow up` for the module: Prefect, MLflow, serve and webhook for one small config."""
    base = tmp_path_factory.mktemp("control")
    home = base / "home"
    cfg = write_case(base / "m", binary_frame(600, seed=5),
                     merge(BINARY_CONFIG, {"registry": {"model_name": "ctl-binary"},
                                           "gate": {"bootstrap_samples": 10}}))
    ports = {"prefect": free_port(), "mlflow": free_port(), "webhook": free_port()}
    out = run(["up", str(cfg), "--prefect-port", str(ports["prefect"]), "--mlflow-port",
               str(ports["mlflow"]), "--webhook-port", str(ports["webhook"]), "--timeout", "300"],
              home, REGROW_WEBHOOK_SECRET=SECRET)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        state = json.loads((home / "run" / "plane.json").read_text())
        yield {"home": home, "config": cfg, "ports": ports, "up": out, "state": state}
    finally:
        run(["down"], home)
        _kill_all(home)


def test_up_starts_every_part_and_they_answer(plane):
    out = plane["up"]
    for name in ("prefect", "mlflow", "serve", "webhook", "warm"):
        assert any(line.startswith(name) and "up after" in line for line in out.stdout.splitlines())
    assert "Traceback" not in out.stderr
    p = plane["ports"]
    assert httpx.get(f"http://127.0.0.1:{p['prefect']}/api/health", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{p['mlflow']}/health", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{p['webhook']}/healthz", timeout=10).status_code == 200
    run_dir = plane["home"] / "run"
    for part in plane["state"]["parts"]:
        assert (run_dir / f"{part['name']}.pid").read_text().strip() == str(part["pid"])
        assert (run_dir / f"{part['name']}.log").exists()
        assert "REGROW_LIFELINE=" not in Path(f"/proc/{part['pid']}/environ").read_bytes().decode(
            errors="replace"), "a part carries the lifeline of `regrow up` and dies with it"
    # the parts run detached from `up`, which has exited: each leads its own session
    assert all(os.getsid(part["pid"]) == part["pid"] for part in plane["state"]["parts"])


def test_ps_reports_the_parts(plane):
    out = run(["ps"], plane["home"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["PART", "PID", "URL", "HEALTH"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert set(rows) == {"prefect", "mlflow", "serve", "webhook", "warm"}
    assert all(row.rstrip().endswith(" up") for row in rows.values()), out.stdout
    info = json.loads(run(["ps", "--json"], plane["home"]).stdout)
    assert info["up"] and {p["health"] for p in info["parts"]} == {"up"}
    assert {p["name"]: p["port"] for p in info["parts"] if p["port"]} == plane["ports"]
    status = run(["up", "--status"], plane["home"])
    assert status.returncode == 0 and status.stdout.splitlines()[0].split()[0] == "PART"


def test_up_again_says_it_is_up(plane):
    pids = {p["pid"] for p in plane["state"]["parts"]}
    out = run(["up", str(plane["config"]), "--prefect-port", str(plane["ports"]["prefect"])],
              plane["home"], REGROW_WEBHOOK_SECRET=SECRET)
    assert out.returncode == 0 and "already up" in out.stdout, out.stdout + out.stderr
    state = json.loads((plane["home"] / "run" / "plane.json").read_text())
    assert {p["pid"] for p in state["parts"]} == pids  # nothing started a second time


def test_commands_use_the_plane(plane):
    api = f"http://127.0.0.1:{plane['ports']['prefect']}/api"
    probe = ("from tasks.store.settings import configure_process_env; import os; "
             "configure_process_env(); print(os.environ.get('PREFECT_API_URL'))")
    got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=_env(plane["home"]), cwd=ROOT)
    assert got.stdout.strip() == api, got.stderr
    mine = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=_env(plane["home"], PREFECT_API_URL="http://10.9.9.9:1/api"),
                          cwd=ROOT)
    assert mine.stdout.strip() == "http://10.9.9.9:1/api"  # a value the user set wins

    out = run(["train", str(plane["config"]), "--json", "--reason", "plane test"], plane["home"],
              REGROW_WEBHOOK_SECRET=SECRET)  # the environment `up` had: the command runs warm
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = json.loads(out.stdout)["run_id"]
    flows = httpx.post(f"{api}/flows/filter", json={"flows": {"name": {"any_": ["regrow-train"]}}},
                       timeout=10).json()
    assert flows, "the training flow is not on the plane's Prefect server"
    runs = httpx.post(f"{api}/flow_runs/filter", timeout=10, json={
        "flows": {"id": {"any_": [flows[0]["id"]]}}}).json()
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    # the command ran in a fork of the plane's warm process (the stack already imported)
    assert "ran `regrow train" in (plane["home"] / "run" / "warm.log").read_text()
    # ... and its MLflow run and model version are in the MLflow UI's store
    ml = f"http://127.0.0.1:{plane['ports']['mlflow']}"
    got = httpx.get(f"{ml}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=10)
    assert got.status_code == 200 and got.json()["run"]["info"]["status"] == "FINISHED"
    model = httpx.get(f"{ml}/api/2.0/mlflow/registered-models/get",
                      params={"name": "ctl-binary"}, timeout=10).json()
    assert model["registered_model"]["aliases"][0]["alias"] == "champion"
    listed = httpx.get(f"{ml}/ajax-api/2.0/mlflow/artifacts/list", params={"run_id": run_id},
                       timeout=10).json()
    assert "candidates.json" in {f["path"] for f in listed["files"]}


def test_down_stops_everything(plane):
    home = plane["home"]
    pids = {p["pid"] for p in plane["state"]["parts"]}
    before = related(home)
    assert pids <= before
    out = run(["down"], home)
    assert out.returncode == 0, out.stderr
    for name in ("prefect", "mlflow", "serve", "webhook", "warm"):
        assert f"stopped {name}" in out.stdout
    assert not any(os.path.exists(f"/proc/{pid}") and _running(pid) for pid in before)
    assert related(home) == set(), "processes of the plane are left behind"
    assert not list((home / "run").glob("*.pid")) and not (home / "run" / "plane.json").exists()
    assert not (home / "run" / "warm.sock").exists() and not (home / "run" / "warm.json").exists()
    ps = run(["ps"], home)
    assert ps.returncode == 0 and "not up" in ps.stdout
    again = run(["down"], home)
    assert again.returncode == 0 and "not up" in again.stdout
    probe = ("from tasks.store.settings import configure_process_env; import os; "
             "configure_process_env(); print(os.environ.get('PREFECT_API_URL'))")
    got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=_env(home), cwd=ROOT)
    assert got.stdout.strip() == "None"  # commands are back to a temporary server


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("part", ["prefect", "mlflow"])
def test_a_taken_port_is_refused(tmp_path: Path, part: str):
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"prefect": free_port(), "mlflow": free_port(), part: port}
        out = run(["up", "--prefect-port", str(ports["prefect"]),
                   "--mlflow-port", str(ports["mlflow"])], home)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip() == (f"error: port {port} ({part}) is already in use on 127.0.0.1; "
                                  f"choose another with --{part}-port")
    assert related(home) == set() and not (home / "run" / "plane.json").exists()


def test_up_on_a_non_loopback_host_needs_the_servers_logins(tmp_path: Path):
    """Prefect's API (flow runs for anyone) and MLflow's server have no login by default: `up
    --host 0.0.0.0` refuses, in one sentence that says what to set, and starts nothing."""
    home = tmp_path / "home"
    ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port())]
    out = run(["up", "--host", "0.0.0.0", *ports], home)
    assert out.returncode == 2, out.stdout + out.stderr
    said = out.stderr.strip()
    assert said.startswith("error: --host 0.0.0.0 would let anyone who reaches this machine "
                           "create Prefect flow runs and change the MLflow registry, and neither "
                           "server has a login: set PREFECT_SERVER_API_AUTH_STRING=<user>:"
                           "<password>"), said
    assert "MLFLOW_AUTH_ADMIN_PASSWORD=<password>" in said and "--app-name basic-auth" in said
    assert said.endswith("or keep the default --host 127.0.0.1") and "\n" not in said
    assert related(home) == set() and not (home / "run" / "plane.json").exists()
    # Prefect's login alone: MLflow's is still missing
    out = run(["up", "--host", "0.0.0.0", *ports], home,
              PREFECT_SERVER_API_AUTH_STRING="admin:not-a-real-password")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "the MLflow server has no login: set MLFLOW_AUTH_ADMIN_PASSWORD" in out.stderr
    assert "PREFECT_SERVER_API_AUTH_STRING=" not in out.stderr
    # a remote MLflow server: `up` starts none, so only Prefect's login is asked for
    out = run(["up", "--host", "0.0.0.0", *ports], home,
              MLFLOW_TRACKING_URI="http://mlflow.example:5000")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "the Prefect API has no login: set PREFECT_SERVER_API_AUTH_STRING" in out.stderr
    assert "MLFLOW_AUTH" not in out.stderr
    assert related(home) == set() and not (home / "run" / "plane.json").exists()


def test_logins_that_let_up_bind_any_host(tmp_path: Path, monkeypatch):
    """Both logins set: no refusal; MLflow's then comes from MLFLOW_AUTH_ADMIN_PASSWORD or a
    basic_auth.ini with admin_password, and its server runs the basic-auth app. Loopback
    needs none."""
    from regrow.runtime import control
    from regrow.tasks.store.settings import Settings

    monkeypatch.setenv("REGROW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings.from_env()
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert control.exposure_problem(host, settings, {}) is None, host
    prefect = {"PREFECT_SERVER_API_AUTH_STRING": "admin:pw"}
    assert control.exposure_problem("0.0.0.0", settings,
                                    {**prefect, "MLFLOW_AUTH_ADMIN_PASSWORD": "pw"}) is None
    ini = tmp_path / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///auth.db\n"
                   "admin_username = admin\n")
    assert control.exposure_problem("0.0.0.0", settings,
                                    {**prefect, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}) is not None
    ini.write_text(ini.read_text() + "admin_password = pw\n")
    assert control.exposure_problem("0.0.0.0", settings,
                                    {**prefect, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}) is None
    assert control.exposure_problem("::", settings, prefect) is not None  # every interface
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "pw")
    (mlflow,) = [p for p in control._plan(control.Options(host="0.0.0.0"), settings, [])
                 if p["name"] == "mlflow"]
    assert mlflow["argv"][-2:] == ["--app-name", "basic-auth"]


def test_up_with_mlflows_login_refuses_strangers(tmp_path: Path):
    """With MLFLOW_AUTH_ADMIN_PASSWORD set, the plane's MLflow runs its login app: a request
    without the login is refused, the admin's is answered; then down."""
    home = tmp_path / "home"
    ports = {"prefect": free_port(), "mlflow": free_port()}
    out = run(["up", "--prefect-port", str(ports["prefect"]), "--mlflow-port",
               str(ports["mlflow"])], home, MLFLOW_AUTH_ADMIN_PASSWORD="plane-pw-123")
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        url = f"http://127.0.0.1:{ports['mlflow']}/api/2.0/mlflow/experiments/search"
        assert httpx.post(url, json={"max_results": 1}, timeout=30).status_code == 401
        ok = httpx.post(url, json={"max_results": 1}, auth=("admin", "plane-pw-123"), timeout=30)
        assert ok.status_code == 200, ok.text
    finally:
        down = run(["down"], home)
    assert down.returncode == 0, down.stdout + down.stderr
    assert related(home) == set()


def test_down_when_nothing_is_up(tmp_path: Path):
    out = run(["down"], tmp_path / "home")
    assert out.returncode == 0 and "not up; nothing to stop" in out.stdout
    ps = run(["ps", "--json"], tmp_path / "home")
    assert ps.returncode == 0 and json.loads(ps.stdout) == {"up": False, "started": None,
                                                           "parts": []}


def test_a_stale_pid_is_never_signalled(tmp_path: Path):
    """A state file whose pid now belongs to another program: reported stopped, cleaned up,
    and that program keeps running."""
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        part = {"name": "prefect", "pid": other.pid, "starttime": 1, "url": "http://127.0.0.1:1",
                "health_url": "http://127.0.0.1:1/api/health", "api_url": "http://127.0.0.1:1/api",
                "port": 1, "argv": [sys.executable, "-m", "prefect", "server", "start"],
                "log": str(home / "run" / "prefect.log"), "pid_file": str(home / "run" / "prefect.pid")}
        (home / "run" / "prefect.pid").write_text(f"{other.pid}\n")
        (home / "run" / "plane.json").write_text(json.dumps(
            {"id": "0" * 32, "ready": True, "parts": [part]}))
        ps = run(["ps"], home)
        assert ps.returncode == 0 and ps.stdout.splitlines()[1].split()[-1] == "stopped"
        out = run(["down"], home)
        assert out.returncode == 0 and "was not running" in out.stdout
        assert other.poll() is None, "down signalled a process that is not part of the plane"
        assert not (home / "run" / "prefect.pid").exists()
        assert not (home / "run" / "plane.json").exists()
    finally:
        other.kill()
        other.wait()


LIGHT = """
import sys, regrow.app.cli
try:
    regrow.app.cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("sklearn", "mlflow", "prefect", "evidently", "great_expectations", "pandas", "numpy")
print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize("command", ["ps", "down"])
def test_ps_and_down_import_no_ml_library(tmp_path: Path, command: str):
    out = subprocess.run([sys.executable, "-c", LIGHT, command], capture_output=True, text=True,
                         env=_env(tmp_path / "home"), cwd=ROOT, timeout=120)
    assert out.stdout.splitlines()[-1] == "HEAVY=", out.stdout + out.stderr


def test_a_part_that_ends_before_it_answers_is_named_with_how_it_ended(tmp_path):
    """An MLflow store the server cannot create: `up` names the part and its exit code, shows
    the end of its log, and leaves nothing running."""
    home = tmp_path / "home"
    out = run(["up", "--prefect-port", str(free_port()), "--mlflow-port", str(free_port())], home,
              timeout=300, MLFLOW_TRACKING_URI="sqlite:////proc/regrow-no-such-dir/mlflow.db")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "error: mlflow (-m mlflow server --backend-store-uri ...) exited with code 1 before it " \
        "answered" in out.stdout
    assert "No such file or directory: '/proc/regrow-no-such-dir'" in out.stdout  # its log's end
    assert out.stdout.rstrip().endswith("nothing of the plane is left running")
    assert not related(home)
    assert not (home / "run" / "plane.json").exists()
