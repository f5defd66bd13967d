"""The prediction service (`regrow predict-server`) on a real MLflow registry and monitoring
store: the scoring protocol, bad input and strangers, following promotions and rollbacks,
the prediction log (labels join it, a kill -9 loses at most one flush interval), the
challenger in shadow, and two replicas following one promotion.

One state directory with two trained versions is shared by the whole module; the in-process
cases run the app under Starlette's test client, the others as `regrow predict-server`
processes on loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from regrow.app import predict_server as ps
from regrow.configs.schema import load_config
from regrow.flows.training import train_flow
from regrow.tasks.monitoring import scoring
from regrow.tasks.registry import governance as gov
from regrow.tasks.registry.mlflow_registry import CHALLENGER, Registry, load_reference
from regrow.tasks.store.database import Store, shadow_predictions
from regrow.tasks.store.settings import Settings
from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case
from tests.procs import free_port, kill9, stop, wait_http

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODEL = BINARY_CONFIG["registry"]["model_name"]
INPUTS = ["amount", "age", "score", "noise", "segment"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A state directory with v1 (champion) and v2 (registered, trained on other rows)."""
    home = tmp_path_factory.mktemp("predict-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("REGROW_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("REGROW_DATABASE_URL", raising=False)
    mp.delenv(ps.TOKEN_ENV, raising=False)
    cfg = write_case(home / "case", binary_frame(800), BINARY_CONFIG)
    assert train_flow(str(cfg)).champion_after == "1"
    write_case(home / "case", binary_frame(800, seed=5, noise=2.0), BINARY_CONFIG)
    assert train_flow(str(cfg)).version == "2"
    yield home, cfg
    mp.undo()


def _stores() -> tuple[Registry, Store]:
    settings = Settings.from_env()
    return Registry(settings), Store(settings.database_url)


def _make_champion(version: str) -> None:
    registry, store = _stores()
    if registry.alias_version(MODEL, "champion") != version:
        gov.promote(registry, store, MODEL, version, by="test", reason="serving test",
                    override_gate="serving test")


def _options(cfg: Path, **kw) -> ps.Options:
    return ps.Options(configs=[str(cfg)], **{"poll_seconds": 0.2, "flush_seconds": 0.3, **kw})


def _client(cfg: Path, token: str | None = None, **kw) -> TestClient:
    return TestClient(ps.create_app([load_config(cfg)], _options(cfg, **kw), token=token))


def _rows(n: int, seed: int = 3, start_id: int = 100_000) -> pd.DataFrame:
    frame = binary_frame(n, seed=seed)
    frame["row_id"] = np.arange(start_id, start_id + n)
    return frame


def _split(frame: pd.DataFrame, columns: list[str]) -> dict:
    return {"dataframe_split": {"columns": columns,
                                "data": frame[columns].astype(object).values.tolist()}}


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


# ------------------------------------------------------------------------------ protocol

def test_every_format_answers_what_the_model_predicts(trained):
    home, cfg = trained
    _make_champion("1")
    registry, _ = _stores()
    version = registry.alias_version(MODEL, "champion")
    model = registry.load(MODEL, version=version)
    spec = load_reference(registry, registry.version_info(MODEL, version).run_id).spec
    frame = _rows(40)
    config = load_config(cfg).config
    _, expected, score, proba = scoring.predict_full(config, model, spec, frame,
                                                     probabilities=True)
    records = frame[INPUTS].to_dict(orient="records")
    bodies = {
        "dataframe_split": _split(frame, INPUTS),
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs as columns": {"inputs": {c: frame[c].tolist() for c in INPUTS}},
    }
    with _client(cfg) as client:
        for name, body in bodies.items():
            res = client.post("/invocations", json=body)
            assert res.status_code == 200, (name, res.text)
            assert res.json() == {"predictions": expected.tolist()}, name
            assert res.headers[ps.VERSION_HEADER] == version
        csv = client.post("/invocations", content=frame[INPUTS].to_csv(index=False),
                          headers={"content-type": "text/csv"})
        assert csv.json() == {"predictions": expected.tolist()}
        same = client.post(f"/v1/models/{MODEL}/invocations", json=bodies["instances"])
        assert same.json() == {"predictions": expected.tolist()}

        detailed = client.post(f"/v1/models/{MODEL}/predict",
                               json=_split(frame, ["row_id", *INPUTS])).json()
        assert detailed["model"] == MODEL and detailed["version"] == version
        got = detailed["predictions"]
        assert [r["id"] for r in got] == [str(i) for i in frame["row_id"]]
        assert [r["prediction"] for r in got] == expected.tolist()
        np.testing.assert_allclose([r["probabilities"]["1"] for r in got], score)
        np.testing.assert_allclose([r["probabilities"]["0"] for r in got], proba[:, 0])
        # without the id column, ids are made, returned, and unique
        made = client.post(f"/v1/models/{MODEL}/predict", json=_split(frame, INPUTS)).json()
        ids = [r["id"] for r in made["predictions"]]
        assert len(set(ids)) == 40 and not set(ids) & {str(i) for i in frame["row_id"]}
        assert client.get("/version").json()["models"] == {MODEL: version}
        assert client.get("/ping").status_code == 200
    # closing wrote every served row to the prediction log: id, version, inputs, prediction
    # and score, as answered
    _, store = _stores()
    logged = scoring.load_window(store, MODEL).set_index("__row_id")
    for answer in (detailed, made):
        rows = logged.loc[[r["id"] for r in answer["predictions"]]]
        assert (rows["__version"] == version).all()
        assert rows["__prediction"].tolist() == [str(p) for p in expected]
        np.testing.assert_allclose(rows["__score"].to_numpy(float), score)
        np.testing.assert_allclose(rows["amount"].to_numpy(float), frame["amount"])
        assert rows["segment"].tolist() == frame["segment"].tolist()


def test_bad_input_and_strangers_get_one_sentence(trained, monkeypatch):
    home, cfg = trained
    _make_champion("1")
    frame = _rows(5)
    with _client(cfg, max_body=20_000) as client:
        def post(body, path=f"/v1/models/{MODEL}/predict", **kw):
            return client.post(path, json=body, **kw)

        missing = post(_split(frame, INPUTS[1:]))
        assert missing.status_code == 422 and "['amount']" in missing.json()["message"]
        extra = post(_split(frame.assign(colour="red"), [*INPUTS, "colour"]))
        assert extra.status_code == 422 and "['colour']" in extra.json()["message"]
        typed = frame.astype({"age": object})
        typed.loc[2, "age"] = "forty"
        wrong = post(_split(typed, INPUTS))
        assert wrong.status_code == 422 and "'age' must be numeric" in wrong.json()["message"]
        twice = post(_split(frame.assign(row_id=7), ["row_id", *INPUTS]))
        assert twice.status_code == 422 and "duplicated" in twice.json()["message"]
        assert post({"dataframe_split": {"columns": INPUTS, "data": [[1, 2]]}}).status_code == 400
        assert post({"rows": []}).status_code == 400
        assert client.post("/invocations", content=b"{", headers={
            "content-type": "application/json"}).status_code == 400
        assert client.post("/invocations", content=b"a=1", headers={
            "content-type": "application/x-www-form-urlencoded"}).status_code == 415
        big = post(_split(_rows(400), INPUTS))
        assert big.status_code == 413 and "20000 bytes" in big.json()["message"]
        unknown = post(_split(frame, INPUTS), path="/v1/models/nobody/predict")
        assert unknown.status_code == 404 and "nobody" in unknown.json()["message"]
        # a bad request in a batch does not fail the good ones batched with it
        results: list[int] = []

        def one(body):
            results.append(post(body).status_code)

        threads = [threading.Thread(target=one, args=(_split(typed if i % 4 == 0 else frame,
                                                             INPUTS),)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [200] * 12 + [422] * 4

    token = "s3cret-token-0123456789"
    with _client(cfg, token=token) as client:
        for path in ("/ping", "/metrics", "/version"):
            assert client.get(path).status_code == 401
        assert client.post("/invocations", json=_split(frame, INPUTS)).status_code == 401
        assert client.post("/invocations", json=_split(frame, INPUTS), headers={
            "authorization": "Bearer wrong-token-000000000"}).status_code == 401
        ok = client.post("/invocations", json=_split(frame, INPUTS),
                         headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    monkeypatch.delenv(ps.TOKEN_ENV, raising=False)
    with pytest.raises(ps.ServiceConfigError, match="without a token"):
        ps.token_from_env("0.0.0.0")
    assert ps.token_from_env("127.0.0.1") is None
    out = subprocess.run([sys.executable, "-m", "regrow.app.cli", "predict-server", str(cfg),
                          "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and "refusing to listen on 0.0.0.0 without a token" in out.stderr


def test_a_model_without_champion_is_503(trained, tmp_path):
    home, cfg = trained
    other = write_case(tmp_path / "other", None, merge(BINARY_CONFIG, {
        "registry": {"model_name": "never-trained"}}))
    app = ps.create_app([load_config(cfg), load_config(other)],
                        ps.Options(configs=[], default_model=MODEL))
    with TestClient(app) as client:
        res = client.post("/v1/models/never-trained/predict", json=_split(_rows(2), INPUTS))
        assert res.status_code == 503
        assert "'never-trained' has no champion to serve: no version is the champion yet" \
            in res.json()["message"]
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["models"]["never-trained"]["version"] is None
        assert client.post("/invocations", json=_split(_rows(2), INPUTS)).status_code == 200


# ------------------------------------------------------------------------------ following, log

def test_follows_promotions_logs_what_it_serves_and_shadows_the_challenger(trained):
    home, cfg = trained
    _make_champion("1")
    registry, store = _stores()
    loaded = load_config(cfg)
    with _client(cfg) as client:
        def served_version(frame) -> str:
            res = client.post(f"/v1/models/{MODEL}/predict",
                              json=_split(frame, ["row_id", *INPUTS]))
            assert res.status_code == 200, res.text
            assert res.headers[ps.VERSION_HEADER] == res.json()["version"]
            return res.json()["version"]

        probes = iter(range(290_000, 300_000))  # one id per probe: a row is logged once

        def probe() -> str:
            return served_version(_rows(1, start_id=next(probes)))

        first = _rows(30, start_id=200_000)
        assert served_version(first) == "1"
        t0 = time.monotonic()
        gov.promote(registry, store, MODEL, "2", by="test", reason="follow",
                    override_gate="serving test")
        _wait(lambda: probe() == "2", 5, "v2 answers")
        on_v2 = _rows(5, start_id=310_000)
        assert served_version(on_v2) == "2"
        assert time.monotonic() - t0 < 5
        gov.rollback(registry, store, MODEL, by="test", reason="follow back")
        _wait(lambda: probe() == "1", 5, "v1 answers again")

        # a challenger waiting for approval is scored in shadow on the same rows
        gov.move_alias(registry, store, MODEL, CHALLENGER, "2", "waits for approval", "test")
        _wait(lambda: client.get("/health").json()["models"][MODEL]["shadow"] == "2", 30,
              "v2 in shadow")
        shadowed = _rows(25, start_id=300_000)
        assert served_version(shadowed) == "1"
        metrics = client.get("/metrics").text
        assert f'regrow_serving_version{{model="{MODEL}",role="shadow",version="2"}} 1.0' \
            in metrics

        def shadow_rows() -> list[str]:
            sp = shadow_predictions.c
            with store.engine.connect() as conn:
                return [r[0] for r in conn.execute(sa.select(sp.row_id).where(
                    sp.model == MODEL, sp.version == "2", sp.row_id.like("3000%")))]
        # the writing process loads the shadow version from MLflow the first time it is asked
        # for it: seconds on a loaded machine, so this waits longer than the alias follow does
        got = _wait(lambda: len(shadow_rows()) == 25 and shadow_rows(), 30, "shadow rows")
        assert sorted(got) == sorted(str(i) for i in shadowed["row_id"])
        gov.move_alias(registry, store, MODEL, CHALLENGER, None, "rejected", "test")
        _wait(lambda: client.get("/health").json()["models"][MODEL]["shadow"] is None, 5,
              "no shadow")
    # closing the service wrote everything queued; the log is the one `score` writes
    window = scoring.load_window(store, MODEL)
    logged = window.set_index("__row_id")
    for i in first["row_id"]:
        assert logged.loc[str(i), "__version"] == "1"
    for i in on_v2["row_id"]:
        assert logged.loc[str(i), "__version"] == "2"
    assert logged.index.is_unique
    assert set(INPUTS) <= set(window.columns)
    labels = pd.DataFrame({"row_id": first["row_id"], "label": first["label"]})
    joined = scoring.record_labels(loaded.config, labels, store)
    assert joined.matched == 30 and joined.unknown_ids == []


def test_log_queue_is_bounded_and_drops_are_counted(trained):
    home, cfg = trained
    _make_champion("1")
    # a queue of 50 rows, written once a minute: the third batch of 20 does not fit
    with _client(cfg, queue_rows=50, flush_seconds=60, flush_rows=1000) as client:
        for n in (20, 20, 20):
            res = client.post("/invocations", json=_split(_rows(n), INPUTS))
            assert res.status_code == 200  # a full queue never fails nor blocks a prediction
        metrics = client.get("/metrics").text
        assert "regrow_serving_log_dropped_rows_total 20.0" in metrics
        assert "regrow_serving_log_queue_rows 40.0" in metrics


def test_a_dead_log_writer_is_replaced_and_its_loss_counted(trained):
    home, cfg = trained
    _make_champion("1")
    with _client(cfg, flush_seconds=0.2) as client:
        logger = client.app.state.logger
        before = _rows(5, start_id=600_000)
        assert client.post("/invocations", json=_split(before, ["row_id", *INPUTS])) \
            .status_code == 200
        _wait(lambda: logger.counts.written >= 5, 10, "the first rows written")
        first = logger.writer_pid
        os.kill(first, 9)
        _wait(lambda: not _alive(first), 5, "the writing process is gone")
        after = _rows(7, start_id=610_000)
        assert client.post("/invocations", json=_split(after, ["row_id", *INPUTS])) \
            .status_code == 200
        _wait(lambda: logger.counts.queued == 0, 20, "the later rows written")
        assert logger.writer_pid != first
        assert logger.counts.failed == 0  # nothing was handed over while it was down
    _, store = _stores()
    logged = set(scoring.load_window(store, MODEL)["__row_id"])
    assert {str(i) for i in [*before["row_id"], *after["row_id"]]} <= logged


# ------------------------------------------------------------------------------ processes

def _start(home: Path, cfg: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "REGROW_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop(ps.TOKEN_ENV, None)
    log = home / f"predict-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "regrow.app.cli", "predict-server",
                                 str(cfg), "--port", str(port), "--poll-seconds", "0.5", *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, proc=proc, log=log)
    except BaseException:
        stop(proc)
        raise
    return proc


def test_two_replicas_follow_one_promotion(trained):
    home, cfg = trained
    _make_champion("1")
    registry, store = _stores()
    ports = [free_port(), free_port()]
    procs = [_start(home, cfg, p) for p in ports]
    body = _split(_rows(3), INPUTS)
    try:
        for p in ports:
            assert httpx.post(f"http://127.0.0.1:{p}/invocations", json=body).headers[
                ps.VERSION_HEADER] == "1"
        t0 = time.monotonic()
        gov.promote(registry, store, MODEL, "2", by="test", reason="replicas",
                    override_gate="serving test")
        for p in ports:
            _wait(lambda p=p: httpx.post(f"http://127.0.0.1:{p}/invocations", json=body)
                  .headers[ps.VERSION_HEADER] == "2", 5, f"replica on {p} answers v2")
        assert time.monotonic() - t0 < 5
    finally:
        for proc in procs:
            stop(proc)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:  # a zombie has exited: its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_loses_at_most_one_flush_interval(trained):
    home, cfg = trained
    _make_champion("1")
    flush = 1.0
    port = free_port()
    proc = _start(home, cfg, port, "--flush-seconds", str(flush))
    answered: list[tuple[float, str]] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            start = time.monotonic()
            i = 0
            while time.monotonic() - start < 4:
                rid = 500_000 + i
                res = client.post(f"/v1/models/{MODEL}/predict",
                                  json=_split(_rows(1, start_id=rid), ["row_id", *INPUTS]))
                assert res.status_code == 200
                answered.append((time.monotonic(), str(rid)))
                i += 1
                time.sleep(0.01)
        writers = _children(proc.pid)
        assert writers, "the service has no writing process"
        killed = kill9(proc)
        # the writing process writes what it was handed, then exits: none is left behind
        _wait(lambda: not any(_alive(pid) for pid in writers), 10,
              f"the writing processes {writers} exit after the service's kill -9")
    finally:
        stop(proc)
    _, store = _stores()
    logged = set(scoring.load_window(store, MODEL)["__row_id"])
    # a row is written by the flush after it was queued: at most `flush` s later, plus the
    # write itself (well under 0.5 s here)
    must = {rid for at, rid in answered if at < killed - flush - 0.5}
    assert must and must <= logged, sorted(must - logged)[:5]
    lost = [rid for _, rid in answered if rid not in logged]
    assert len(lost) < len(answered)
