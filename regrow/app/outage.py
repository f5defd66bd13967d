"""Outages as one sentence: a store or server that does not answer, a state directory that
cannot be written, a pipe that closed.

Each vendor seam raises or wraps its own typed error (`StoreUnavailable` for the monitoring
store, `RegistryUnavailable` for MLflow, Prefect's "Failed to reach API"); `describe` turns
whatever a command raised into the sentence that names the service and its address
(passwords masked), or None when the error is no outage. The command line prints it as
``error: <sentence>`` and exits 1 (`regrow.app.cli.main`); bad input keeps exit 2.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# A file system that will not take a write: read-only, no permission, full.
READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _prefect(err: BaseException) -> str | None:
    """The Prefect API did not answer (a refused connection, a timeout)."""
    from regrow.tasks.data.ingest import mask_url

    api = os.environ.get("PREFECT_API_URL", "").strip().rstrip("/")
    for e in _chain(err):
        text = str(e)
        if isinstance(e, RuntimeError) and text.startswith("Failed to reach API at"):
            where = text.removeprefix("Failed to reach API at").strip().rstrip("/")
            return f"the Prefect API at {mask_url(where or api)} cannot be reached"
        if type(e).__module__.startswith(("httpx", "httpcore")) and type(e).__name__.endswith(
                ("ConnectError", "Timeout", "RemoteProtocolError", "ReadError")):
            try:
                url = str(e.request.url)  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError):
                url = api
            if not url.startswith(api or "http"):
                continue  # some other HTTP service: not Prefect's
            reason = text.splitlines()[0] if text else type(e).__name__
            return f"the Prefect API at {mask_url(api or url)} cannot be reached ({reason})"
    return None


def _filesystem(err: BaseException, home: Path | None) -> str | None:
    """A write the file system refused (read-only, no permission, full); `home`: the state
    directory, named when the file is in it."""
    for e in _chain(err):
        if not isinstance(e, OSError) or e.errno not in READ_ONLY | FULL:
            continue
        name = e.filename if isinstance(e.filename, str) else None
        why = os.strerror(e.errno)
        if home is not None and (name is None or Path(name).absolute().is_relative_to(home)):
            state = "is full" if e.errno in FULL else "cannot be written (read-only?)"
            return (f"the state directory {home} (REGROW_HOME) {state}: "
                    + (f"{name}: {why}" if name else why))
        return f"cannot write {name}: {why}" if name else f"cannot write a file: {why}"
    return None


def describe(err: BaseException) -> str | None:
    """The outage `err` (or what caused it) reports, as one sentence naming the service and its
    address; None when it is no outage (a bug or bad input: reported as such elsewhere)."""
    from regrow.tasks.store import database as store
    from regrow.tasks.store.settings import Settings

    try:
        settings: Settings | None = Settings.from_env()
    except OSError:  # the state directory itself cannot be made
        settings = None
    if settings is not None:
        for e in _chain(err):  # the outermost vendor error says whose store it was
            vendor = type(e).__module__.partition(".")[0]
            if vendor == "mlflow" or type(e).__name__ == "RegistryUnavailable":
                from regrow.tasks.registry import mlflow_registry as registry

                found = registry.describe_unreachable(e, settings.tracking_uri)
            elif vendor in ("sqlalchemy", "psycopg", "sqlite3") \
                    or isinstance(e, store.StoreUnavailable):
                found = store.describe_unreachable(e, settings.database_url)
            else:
                continue
            if found:
                return found
            break
    return _prefect(err) or _filesystem(err, None if settings is None else settings.home)


def check_stores(timeout: float = 10.0) -> None:
    """Raise when the monitoring store or an MLflow tracking server does not answer now (a
    long-running command, `regrow serve`, checks before it starts serving). A local MLflow
    store is a file beside the monitoring store: nothing to ask.

    Raises:
        StoreUnavailable: the monitoring store cannot be reached or opened.
        RegistryUnavailable: the MLflow tracking server does not answer its health check.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    from regrow.tasks.data.ingest import mask_url
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    store = Store(settings.database_url)
    try:
        store.engine  # noqa: B018 - connects, and checks the schema
    finally:
        store.dispose()
    uri = settings.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    parts = urllib.parse.urlsplit(uri)
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl().rstrip("/")
    try:
        with urllib.request.urlopen(f"{bare}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:  # it answered (an auth proxy, an old server): it is up
        return
    except (urllib.error.URLError, OSError) as err:
        from regrow.tasks.registry.mlflow_registry import RegistryUnavailable

        reason = getattr(err, "reason", err)
        raise RegistryUnavailable(f"MLflow at {mask_url(uri)} did not answer ({reason})") \
            from None


def quiet_stdout() -> None:
    """After a broken pipe (``regrow status | head -1``): point stdout at /dev/null so that
    Python's final flush does not fail again (the Python docs' recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
