"""MLflow adapter: runs, artifacts, logged models, registry versions and aliases.

The only module that imports mlflow. Clients are built when first used, never at import.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from regrow.tasks.store.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryError(RuntimeError):
    """The tracking or registry store failed."""


class RegistryUnavailable(RegistryError):
    """MLflow gave no answer (server down, store unreadable): never read as "nothing there"."""


# What MLflow answers for a model, version or alias that does not exist; anything else (a
# connection refused, a timeout, a server error) is an outage, not an absence.
_ABSENT_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


# What an MLflow error says went wrong, when it is an outage: (marker, short reason).
_OUTAGE_MARKERS = (
    ("Connection refused", "connection refused"),
    ("Failed to establish", "no connection"),
    ("Max retries exceeded", "no answer"),
    ("Read timed out", "timed out"),
    ("NameResolutionError", "unknown host"),
    ("Name or service not known", "unknown host"),
    ("readonly database", "it is read-only"),
    ("read-only file system", "it is read-only"),
    ("disk is full", "its disk is full"),
    ("No space left", "its disk is full"),
    ("disk I/O error", "disk I/O error (is the disk full?)"),
    ("unable to open database file", "it cannot be opened"),
)


def _reason(err: BaseException) -> str:
    """A few words on why MLflow failed (`_OUTAGE_MARKERS`), else its first line, masked."""
    from regrow.tasks.data.ingest import mask_url

    text = str(err)
    for marker, reason in _OUTAGE_MARKERS:
        if marker in text:
            return reason
    return mask_url(text.splitlines()[0])[:200] if text else type(err).__name__


def _absent_or_raise(err: Exception, where: str, what: str) -> None:
    """Return when `err` says `what` does not exist; else raise `RegistryUnavailable`."""
    if getattr(err, "error_code", None) in _ABSENT_CODES:
        return
    raise RegistryUnavailable(f"MLflow at {where} did not answer while reading {what} "
                              f"({_reason(err)})") from err


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered version, in plain types."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]
    description: str = ""
    source: str = ""
    created_ms: int | None = None


def pip_requirements() -> list[str]:
    """Exact pins for what a logged model needs: skips MLflow's slow inference subprocess."""
    import numpy
    import pandas
    import scipy
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}", f"pandas=={pandas.__version__}",
            f"numpy=={numpy.__version__}", f"scipy=={scipy.__version__}"]


# Models registered by earlier layouts name their classes by the modules of the day: regrow
# 0.1.0 by its old top-level packages (`tasks.features.ToString`), later ones by the flat
# `regrow.tasks.features`; these are the modules such a model can reference.
LEGACY_MODULES = {"tasks": "regrow.tasks", "tasks.features": "regrow.tasks.data.features",
                  "regrow.tasks.features": "regrow.tasks.data.features",
                  "configs": "regrow.configs", "configs.expression": "regrow.configs.expression"}


@contextlib.contextmanager
def legacy_module_names():
    """While loading a model, let the old module names resolve to regrow's modules. A name
    some other package already holds in this process (a project's own `tasks`) is left alone,
    and the aliases are removed afterwards."""
    import importlib

    added = []
    for old, new in LEGACY_MODULES.items():
        if old not in sys.modules:
            try:
                sys.modules[old] = importlib.import_module(new)
            except ImportError:
                continue
            added.append(old)
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)


# A new home's MLflow database starts as a copy of one MLflow has already migrated: creating
# it in place runs every migration of the tracking and registry schemas (1.5 s on 2 cores).
STORE_FILE = "mlflow.db"


def store_template() -> Path | None:
    """The migrated, empty MLflow database for the installed MLflow, in regrow's cache."""
    from importlib.metadata import PackageNotFoundError, version

    from regrow.tasks.store.settings import cache_dir

    try:
        return cache_dir() / f"mlflow-store-{version('mlflow')}" / STORE_FILE
    except PackageNotFoundError:
        return None


def build_store_template() -> tuple[Path, float]:
    """Create the template unless it exists; returns (its path, seconds spent: 0 if it did).

    Raises:
        RuntimeError: MLflow is not installed or could not create its database.
    """
    import shutil
    import tempfile
    import time

    target = store_template()
    if target is None:
        raise RuntimeError("MLflow is not installed")
    if target.is_file():
        return target, 0.0
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".mlflow-store-", dir=target.parent))
    try:
        import logging

        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # quiet "creating tables"
        uri = f"sqlite:///{work / STORE_FILE}"
        client = MlflowClient(uri, uri)
        client.search_experiments(max_results=1)  # the tracking schema
        with contextlib.suppress(MlflowException):
            client.get_registered_model("regrow-template")  # the registry schema
        (work / STORE_FILE).chmod(0o644)
        try:
            os.replace(work / STORE_FILE, target)
        except OSError:  # built meanwhile by another process: theirs stands
            pass
    except MlflowException as err:
        raise RuntimeError(str(err)) from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, time.perf_counter() - started


def seed_store(settings: Settings) -> bool:
    """Give regrow's own MLflow database (``$REGROW_HOME/mlflow.db``, when
    ``MLFLOW_TRACKING_URI`` names no other store) the template's copy if it does not exist.

    The copy's ``Default`` experiment gets what MLflow would have given it here (artifacts in
    ``./mlruns/0`` of the working directory, created now). Returns True when it was seeded;
    False when the database exists, no template was built or the copy failed (MLflow then
    creates the database itself).
    """
    import sqlite3
    import time

    from regrow.tasks.store.settings import place_copy

    db = settings.home / STORE_FILE
    if settings.tracking_uri != f"sqlite:///{db}" or db.exists():
        return False
    template = store_template()
    if template is None or not template.is_file():
        return False

    def as_made_here(copy: Path) -> None:
        now = int(time.time() * 1000)
        with contextlib.closing(sqlite3.connect(copy)) as con, con:
            con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                        "last_update_time = ? WHERE experiment_id = 0",
                        (os.path.join(os.path.abspath("mlruns"), "0"), now, now))
    try:
        return place_copy(template, db, edit=as_made_here)
    except sqlite3.Error:
        return False


class Registry:
    """Tracking + registry access for one settings object."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client = None
        self._places: dict[str, tuple[str, str]] = {}  # run id -> (experiment id, artifact URI)

    @property
    def client(self):
        """An MlflowClient on the configured stores (created once)."""
        if self._client is None:
            import logging

            import mlflow
            from mlflow import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # quiet "creating tables"
            # A store error is logged there with its traceback, then raised (as MlflowException)
            # to the caller, who reports it: the log would show a person the traceback twice.
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
            seed_store(self.settings)
            # MLflow also writes the URIs into os.environ "for subprocesses"; Settings.from_env
            # reads MLFLOW_TRACKING_URI as the user's choice, so put the environment back as the
            # user left it (MLflow's own global keeps the URI for this process).
            saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
            mlflow.set_tracking_uri(self.settings.tracking_uri)
            mlflow.set_registry_uri(self.settings.tracking_uri)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._client = MlflowClient(self.settings.tracking_uri, self.settings.tracking_uri)
        return self._client

    def _local_store(self) -> bool:
        uri = self.settings.tracking_uri
        return uri.startswith(("sqlite:", "file:", "postgresql", "mysql")) or "://" not in uri

    def experiment_id(self, model_name: str) -> str:
        """The experiment for a model (``regrow/<model>``), created on first use."""
        name = f"regrow/{model_name}"
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self._local_store():  # keep artifacts under REGROW_HOME, not the working directory
            location = (self.settings.artifact_root / model_name).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def start_run(self, model_name: str, run_name: str, tags: Mapping[str, object]) -> str:
        """Open a run in the model's experiment; returns its id (tag values are stringified)."""
        run = self.client.create_run(self.experiment_id(model_name), run_name=run_name,
                                     tags={k: str(v) for k, v in tags.items()})
        self._places[run.info.run_id] = (str(run.info.experiment_id), str(run.info.artifact_uri))
        return run.info.run_id

    def log_dataset(self, run_id: str, *, name: str, fingerprint: str, source: str,
                    sample: pd.DataFrame, profile: dict[str, Any],
                    context: str = "training") -> None:
        """Log the data a run read as an MLflow dataset input: `name`, the source (a file path
        or a masked SQL location), digest = the first 36 characters of the content
        `fingerprint` (MLflow's limit; the whole fingerprint is in the profile), the schema
        inferred from `sample` (a few rows) and `profile` (rows, time range, ...)."""
        import warnings

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.models import infer_signature

        is_file = "://" not in source
        with warnings.catch_warnings():  # the integer-columns hint is about model inputs
            warnings.simplefilter("ignore", UserWarning)
            schema = infer_signature(_parquet_safe(sample)).inputs
        dataset = Dataset(
            name=name[:500], digest=fingerprint[:36],
            source_type="local" if is_file else "sql",
            source=json.dumps({"uri": Path(source).resolve().as_uri() if is_file else source}),
            schema=json.dumps({"mlflow_colspec": schema.to_dict()}) if schema else None,
            profile=json.dumps({"fingerprint": fingerprint, **profile}, default=str))
        tags = [InputTag("mlflow.data.context", context),
                *(InputTag(f"regrow.{k}", str(v)) for k, v in profile.items() if v is not None)]
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])

    def running_runs(self, model_name: str) -> set[str]:
        """Ids of the model's training runs that MLflow still shows RUNNING (one search)."""
        found = self.client.search_runs([self.experiment_id(model_name)],
                                        "attributes.status = 'RUNNING'", max_results=1000)
        return {r.info.run_id for r in found}

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log params (values stringified, 6000 chars max each)."""
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None]) -> None:
        """Log finite metrics."""
        import math
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, 0) for k, v in metrics.items()
                 if v is not None and not math.isnan(float(v))]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Set run tags (values stringified)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(run_id, tags=items)

    def log_dict(self, run_id: str, obj: Any, path: str) -> None:
        """Log a JSON artifact."""
        self.log_text(run_id, json.dumps(obj, indent=2, default=str), path)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        """Log a text artifact at `path` inside the run's artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(path).name
            target.write_text(text, encoding="utf-8")
            parent = str(Path(path).parent)
            self.client.log_artifact(run_id, str(target), None if parent == "." else parent)

    def log_model(self, run_id: str, model: Any, input_example: pd.DataFrame, name: str = "model") -> str:
        """Log a fitted sklearn Pipeline with signature and input example; returns its URI."""
        import mlflow
        import skops.io
        from mlflow.models import infer_signature

        self.client  # noqa: B018 - make sure the URIs are set
        signature = infer_signature(input_example, model.predict(input_example))
        # We built this object ourselves; trust exactly the types it contains.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        # Create the LoggedModel in the run's experiment ourselves: without an active run,
        # log_model would file it under the default experiment (artifacts in ./mlruns).
        experiment_id = self.client.get_run(run_id).info.experiment_id
        logged = self.client.create_logged_model(experiment_id=experiment_id, name=name,
                                                 source_run_id=run_id, model_type="sklearn")
        info = mlflow.sklearn.log_model(
            model, name=name, signature=signature, input_example=input_example,
            pip_requirements=pip_requirements(), skops_trusted_types=trusted, run_id=run_id,
            model_id=logged.model_id,
        )
        return info.model_uri

    def register(self, model_uri: str, name: str, run_id: str, tags: dict[str, Any],
                 description: str = "") -> str:
        """Register a logged model as a new version of `name`; returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="Managed by regrow.")
        # An MLflow server refuses a `models:/m-<id>` source without the model id itself
        # ("The model_id request parameter must identify the resource ..."); local stores
        # accept either form.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        mv = self.client.create_model_version(name, model_uri, run_id=run_id,
                                              tags={k: str(v) for k, v in tags.items()},
                                              description=description, model_id=model_id)
        return str(mv.version)

    def where(self) -> str:
        """The registry's address, with any password masked (for messages)."""
        from regrow.tasks.data.ingest import mask_url

        return mask_url(self.settings.tracking_uri)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version an alias points to, or None (also when the model does not exist).

        Raises:
            RegistryUnavailable: MLflow did not answer (an outage is never "no alias").
        """
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"the {alias} of {name!r}")
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point an alias at a version."""
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias (no error when it is not set)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException:
            pass

    def aliases(self, name: str) -> dict[str, str]:
        """Every alias of a registered model -> its version ({} when the model does not exist).

        Raises:
            RegistryUnavailable: MLflow did not answer.
        """
        from mlflow.exceptions import MlflowException

        try:
            return {a: str(v) for a, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"the aliases of {name!r}")
            return {}

    def find_version(self, name: str, version: str) -> ModelVersionInfo | None:
        """One version's run, tags and aliases, or None when there is no such version.

        Raises:
            RegistryUnavailable: MLflow did not answer.
        """
        from mlflow.exceptions import MlflowException

        try:
            return self.version_info(name, version)
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"version {version} of {name!r}")
            return None

    def set_version_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        """Tag a model version."""
        for k, v in tags.items():
            self.client.set_model_version_tag(name, version, k, str(v))

    def version_info(self, name: str, version: str) -> ModelVersionInfo:
        """One version's run, tags and aliases.

        Raises:
            MlflowException: there is no such version.
            RegistryUnavailable: MLflow did not answer.
        """
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, version)
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"version {version} of {name!r}")
            raise
        return ModelVersionInfo(name, str(mv.version), mv.run_id, dict(mv.tags), list(mv.aliases),
                                mv.description or "", mv.source or "", mv.creation_timestamp)

    def version_numbers(self, name: str) -> list[str]:
        """The registered versions of a model, oldest first (empty when it is not registered)."""
        from mlflow.exceptions import MlflowException

        if "'" in name:  # cannot be quoted in a search filter; regrow names never hold one
            return []
        try:
            found = self.client.search_model_versions(f"name = '{name}'")
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"the versions of {name!r}")
            return []
        return sorted((str(v.version) for v in found), key=int)

    def versions(self, name: str, filter_string: str = "") -> list[ModelVersionInfo]:
        """Every registered version of a model (`filter_string`: more conditions, e.g.
        ``tags.`regrow.orphan` = 'true'``), oldest first; one search.

        Raises:
            RegistryUnavailable: MLflow did not answer.
        """
        from mlflow.exceptions import MlflowException

        if "'" in name:  # cannot be quoted in a search filter; regrow names never hold one
            return []
        query = f"name = '{name}'" + (f" and {filter_string}" if filter_string else "")
        try:
            found = self.client.search_model_versions(query)
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"the versions of {name!r}")
            return []
        infos = [ModelVersionInfo(name, str(mv.version), mv.run_id, dict(mv.tags),
                                  list(mv.aliases), mv.description or "", mv.source or "",
                                  mv.creation_timestamp) for mv in found]
        return sorted(infos, key=lambda v: int(v.version))

    def set_version_description(self, name: str, version: str, description: str) -> None:
        """Replace a version's description."""
        self.client.update_model_version(name, version, description=description)

    def load(self, name: str, alias: str | None = None, version: str | None = None) -> Any:
        """Load a registered sklearn model by alias or version.

        regrow only loads models it registered itself, so deserialization is allowed here.
        """
        import mlflow

        self.client  # noqa: B018
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
        ref = f"@{alias}" if alias else f"/{version}"
        from mlflow.exceptions import MlflowException

        try:
            with legacy_module_names():
                return mlflow.sklearn.load_model(f"models:/{name}{ref}")
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"model {name}{ref}")
            raise

    def run_info(self, run_id: str) -> dict[str, Any]:
        """A run's status, tags, params and metrics.

        Raises:
            MlflowException: there is no such run.
            RegistryUnavailable: MLflow did not answer.
        """
        r = self._get_run(run_id)
        return {"status": r.info.status, "tags": dict(r.data.tags), "params": dict(r.data.params),
                "metrics": dict(r.data.metrics), "artifact_uri": r.info.artifact_uri,
                "experiment_id": r.info.experiment_id}

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """Like `run_info`, or None when the store has no run with this id."""
        from mlflow.exceptions import MlflowException

        try:
            return self.run_info(run_id)
        except MlflowException:  # an outage is RegistryUnavailable, not an absence
            return None

    def _get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"run {run_id}")
            raise

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Artifact paths directly under `path`."""
        return [a.path for a in self.client.list_artifacts(run_id, path)]

    def run_place(self, run_id: str) -> tuple[str, str]:
        """(experiment id, artifact URI) of a run: neither ever changes, so each run is asked
        once per process."""
        if run_id not in self._places:
            info = self._get_run(run_id).info
            self._places[run_id] = (str(info.experiment_id), str(info.artifact_uri))
        return self._places[run_id]

    def _local_artifacts(self, run_id: str) -> Path | None:
        """The run's artifact folder when it is on this file system, else None."""
        from mlflow.utils.file_utils import local_file_uri_to_path
        from mlflow.utils.uri import is_local_uri

        uri = self.run_place(run_id)[1]
        return Path(local_file_uri_to_path(uri)) if is_local_uri(uri) else None

    @contextlib.contextmanager
    def local_artifact(self, run_id: str, path: str) -> Iterator[Path]:
        """A run's artifact (file or folder) as a local path: in place when the run's artifacts
        are on this file system, else a temporary download (a round of the tracking store and
        a copy, ~30 ms) removed afterwards.

        Raises:
            MlflowException, OSError: no such run or artifact.
        """
        folder = self._local_artifacts(run_id)
        if folder is not None:
            target = folder / path
            if not target.exists():
                raise FileNotFoundError(f"run {run_id} has no artifact {path}")
            yield target
            return
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(self.client.download_artifacts(run_id, path, tmp))

    def read_text_artifact(self, run_id: str, path: str) -> str | None:
        """A text artifact of a run, or None when the run has no such file."""
        from mlflow.exceptions import MlflowException

        try:
            with self.local_artifact(run_id, path) as target:
                return target.read_text(encoding="utf-8") if target.is_file() else None
        except MlflowException as err:
            _absent_or_raise(err, self.where(), f"artifact {path} of run {run_id}")
            return None
        except FileNotFoundError:
            return None

    def read_json_artifact(self, run_id: str, path: str) -> Any:
        """A JSON artifact of a run, or None when it is missing or not JSON."""
        text = self.read_text_artifact(run_id, path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].where(out[col].isna(), out[col].astype(str))
    return out


def log_reference(registry: Registry, run_id: str, reference: Any) -> None:
    """Store a version's drift reference (`tasks.monitoring.reference.Reference`) as run artifacts."""
    from regrow.tasks.monitoring.reference import dumps_meta

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        _parquet_safe(reference.frame).to_parquet(path, index=False)
        registry.client.log_artifact(run_id, str(path), "reference")
    registry.log_text(run_id, dumps_meta(reference), "reference/meta.json")


def load_reference(registry: Registry, run_id: str) -> Any:
    """Load the drift reference stored with a run.

    Raises:
        RegistryError: the run has no reference (trained before references were kept).
    """
    from mlflow.exceptions import MlflowException

    from regrow.tasks.monitoring.reference import Reference

    try:
        with registry.local_artifact(run_id, "reference") as local:
            frame = pd.read_parquet(local / "reference.parquet")
            meta = json.loads((local / "meta.json").read_text())
    except MlflowException as err:
        _absent_or_raise(err, registry.where(), f"the drift reference of run {run_id}")
        raise RegistryError(f"run {run_id} has no drift reference: {err}") from None
    except FileNotFoundError as err:
        raise RegistryError(f"run {run_id} has no drift reference: {err}") from None
    return Reference.from_parts(frame, meta)


def describe_unreachable(err: BaseException | None, tracking_uri: str) -> str | None:
    """A one-line message when `err` (or what caused it) says MLflow cannot be reached or
    cannot write: a tracking server that does not answer, a local store that is read-only or
    on a full disk. `RegistryUnavailable` says so itself.

    MLflow gives up after ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (regrow sets 3, backoff 1 s).

    Returns:
        The message, or None when the error is something else.
    """
    from mlflow.exceptions import MlflowException

    from regrow.tasks.data.ingest import mask_url

    where = mask_url(tracking_uri)
    while err is not None:
        if isinstance(err, RegistryUnavailable):
            return str(err)
        if isinstance(err, MlflowException) and any(m in str(err) for m, _ in _OUTAGE_MARKERS):
            if tracking_uri.startswith(("http://", "https://")):
                return (f"the MLflow tracking server {where} cannot be reached ({_reason(err)}; "
                        f"gave up after "
                        f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '7')} retries)")
            return f"the MLflow store {where} cannot be written: {_reason(err)}"
        err = err.__cause__ or err.__context__
    return None


TRUSTED_DIR = "trusted"


def log_trusted_set(registry: Registry, run_id: str, trusted: Any) -> None:
    """Store a version's trusted evaluation set (`tasks.model.trusted.TrustedSet`) as run artifacts,
    beside its drift reference."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "holdout.parquet"
        _parquet_safe(trusted.frame).to_parquet(path, index=False)
        registry.client.log_artifact(run_id, str(path), TRUSTED_DIR)
    registry.log_dict(run_id, trusted.meta, f"{TRUSTED_DIR}/meta.json")


def load_trusted_set(registry: Registry, run_id: str) -> Any:
    """The trusted evaluation set stored with a run, or None for runs that kept none (versions
    registered before trusted sets were kept)."""
    from mlflow.exceptions import MlflowException

    from regrow.tasks.model.trusted import TrustedSet

    try:
        with registry.local_artifact(run_id, TRUSTED_DIR) as local:
            frame = pd.read_parquet(local / "holdout.parquet")
            meta = json.loads((local / "meta.json").read_text())
    except MlflowException as err:
        _absent_or_raise(err, registry.where(), f"the trusted set of run {run_id}")
        return None
    except FileNotFoundError:
        return None
    return TrustedSet(frame, meta)


def warm_up(settings: Settings) -> None:
    """Open the tracking and registry stores once (MLflow caches a store per URI and verifies
    a database's schema when it opens it: ~1 s), then close their connections, so processes
    forked from this one (`regrow.runtime.warm`) reuse the verified stores on fresh connections."""
    registry = Registry(settings)
    registry.aliases("regrow-warm-up")
    try:  # logging and loading a model check its pins against every installed package: ~0.9 s
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    except (ImportError, AttributeError):  # a later MLflow without this map: nothing to prime
        pass
    client = registry.client
    for store in (client._tracking_client.store, client._get_registry_client().store):
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()


def monitoring_experiment(model_name: str) -> str:
    """The experiment a model's drift checks are logged to: ``regrow/<model>-monitoring``."""
    return f"regrow/{model_name}-monitoring"


def log_drift_check(registry: Registry, model: str, version: str, champion_run_id: str,
                    check_id: int | None, assessment: Any, report_path: str | None) -> str:
    """One MLflow run per drift check in the model's monitoring experiment: tags (model,
    version, check id, the champion's run, verdict, the report's path), the check's numbers as
    metrics and its summary as ``drift/summary.md``; returns the run id.

    The HTML report (several MB) is written once: with a local tracking store (the embedded
    default, artifacts under ``REGROW_HOME`` too) the run links the local file by tag
    ``regrow.drift.report_path``; with a tracking server, where that file cannot be read, it is
    also logged as ``drift/<file>``.
    """
    run_id = registry.start_run(f"{model}-monitoring", f"drift-check-{check_id}", {
        "regrow.model": model, "regrow.version": version, "regrow.check_id": check_id,
        "regrow.champion_run_id": champion_run_id, "regrow.drift.verdict": assessment.verdict,
        "regrow.drift.persistent": str(assessment.persistent).lower(),
        "regrow.drift.warning": str(assessment.warning).lower(),
        "regrow.drift.drifted_columns": ", ".join(assessment.drifted_columns) or "-",
        "regrow.drift.report_path": report_path or "-"})
    try:
        perf = assessment.performance
        registry.log_metrics(run_id, {
            "window_rows": assessment.window_rows, "drift_share": assessment.drift_share,
            **({} if perf is None else {f"{perf.metric}": perf.current,
                                        f"{perf.metric}_reference": perf.reference,
                                        f"{perf.metric}_drop": perf.drop,
                                        "labelled_rows": perf.labelled_rows})})
        registry.log_text(run_id, f"# Drift check #{check_id}: {assessment.verdict}\n\n"
                          + "\n".join(f"- {r}" for r in assessment.reasons)
                          + (f"\n\nreport: `{report_path}`" if report_path else "")
                          + f"\n\n{assessment.markdown}", "drift/summary.md")
        if report_path and not registry._local_store():
            registry.client.log_artifact(run_id, report_path, "drift")
    except BaseException:
        registry.end_run(run_id, "FAILED")
        raise
    registry.end_run(run_id, "FINISHED")
    return run_id


def run_link(registry: Registry, run_id: str) -> str:
    """Where a run can be seen: its page in the MLflow UI (`run_url`), else the store and the
    run id."""
    exp = registry.run_place(run_id)[0]
    base = ui_url(registry)
    if base is not None:
        return f"{base}/#/experiments/{exp}/runs/{run_id}"
    return f"MLflow store {registry.settings.tracking_uri}, experiment {exp}, run {run_id}"


def ui_url(registry: Registry) -> str | None:
    """The MLflow UI's address: ``REGROW_MLFLOW_UI_URL``, else the tracking URI when it is a
    tracking server, else the control plane's MLflow UI when it serves this local store (see
    `tasks.store.plane_state`); None for a local store nobody serves."""
    from regrow.tasks.store.plane_state import serving_mlflow_url

    explicit = os.environ.get("REGROW_MLFLOW_UI_URL", "").strip()
    uri = explicit or registry.settings.tracking_uri
    if not uri.startswith(("http://", "https://")):
        uri = serving_mlflow_url(registry.settings.run_dir, uri) or ""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def run_url(registry: Registry, run_id: str) -> str | None:
    """A run's page in the MLflow UI (None without a UI address)."""
    if not run_id or ui_url(registry) is None:
        return None
    return run_link(registry, run_id)


def artifact_link(registry: Registry, run_id: str | None, path: str) -> str | None:
    """Where one of a run's artifacts can be opened: the run's page in the MLflow UI, else the
    artifact's own URI (a ``file://`` path for a local store)."""
    if not run_id:
        return None
    page = run_url(registry, run_id)
    if page is not None:
        return f"{page}/artifacts/{path}"
    return f"{registry.run_place(run_id)[1].rstrip('/')}/{path}"


def version_url(registry: Registry, model: str, version: str, card_path: str) -> str | None:
    """A model version's page in the MLflow UI (its description links the model card), else
    the card artifact (`card_path`) on the version's run."""
    base = ui_url(registry)
    if base is not None:
        return f"{base}/#/models/{model}/versions/{version}"
    return artifact_link(registry, registry.version_info(model, version).run_id, card_path)
