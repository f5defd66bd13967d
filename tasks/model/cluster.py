"""Candidate search on a Dask cluster (`candidates.backend: dask`), the one module that talks to
Dask.

The grid search stays scikit-learn's `GridSearchCV`; its fits go to the cluster through joblib's
backend for Dask: each (candidate parameters, fold) fit is one task, spread over every worker
thread; the refit of each candidate's best parameters on the whole training part runs in the
calling process, which keeps the fitted model. The estimators are seeded
exactly as in a local search (`candidates.seed`), so the cluster finds the same scores, the
same winner and the same fitted model. The scheduler's address comes from the environment
(``REGROW_DASK_ADDRESS``, e.g. ``tcp://scheduler:8786``); the workers must run the same regrow
and library versions as the caller (the pipeline's own transformers are imported there).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from regrow.configs.schema import Config

ADDRESS_ENV = "REGROW_DASK_ADDRESS"
CONNECT_TIMEOUT_ENV = "REGROW_DASK_CONNECT_TIMEOUT"  # seconds, default 10

_clients: dict[tuple[int, str], Any] = {}  # one client per process and address


class ClusterError(RuntimeError):
    """The Dask cluster named for the candidate search cannot be used."""


def address() -> str:
    """The scheduler's address from the environment.

    Raises:
        ClusterError: it is not set.
    """
    found = os.environ.get(ADDRESS_ENV, "").strip()
    if not found:
        raise ClusterError(f"candidates.backend is 'dask' but {ADDRESS_ENV} is not set: give "
                           "the Dask scheduler's address, e.g. tcp://scheduler:8786")
    return found


def client(where: str) -> Any:
    """A connected `distributed.Client` for `where` (made once per process).

    Raises:
        ClusterError: Dask is not installed, or the scheduler does not answer.
    """
    key = (os.getpid(), where)
    if key in _clients:
        return _clients[key]
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("candidates.backend is 'dask' but Dask is not installed: "
                           "pip install 'regrow[dask]'") from None
    timeout = float(os.environ.get(CONNECT_TIMEOUT_ENV, "10"))
    try:
        made = Client(where, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ClusterError(f"the Dask scheduler at {where} ({ADDRESS_ENV}) did not answer "
                           f"within {timeout:g} s: {err}") from None
    _clients[key] = made
    return made


def n_jobs(config: Config) -> int:
    """The grid search's `n_jobs`: every worker thread on a cluster, else the config's."""
    return -1 if config.candidates.backend == "dask" else config.candidates.n_jobs


@contextlib.contextmanager
def search_backend(config: Config) -> Iterator[dict[str, Any]]:
    """Run the grid searches inside this block where the config says: locally (nothing to do)
    or on the Dask cluster. Yields what was used, for the run's record.

    Raises:
        ClusterError: see `address` and `client`.
    """
    if config.candidates.backend != "dask":
        yield {"backend": "local", "n_jobs": config.candidates.n_jobs}
        return
    import joblib

    where = address()
    made = client(where)
    workers = made.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    with joblib.parallel_backend("dask", client=made):
        yield {"backend": "dask", "scheduler": where, "workers": len(workers),
               "threads": threads}
