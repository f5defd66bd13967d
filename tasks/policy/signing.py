"""HMAC signatures of webhook deliveries: signing (for senders) and verification.

``X-Regrow-Signature: sha256=<hex>`` where ``<hex>`` is HMAC-SHA256(secret, ``f"{timestamp}."``
+ raw body) and ``X-Regrow-Timestamp`` is the unix time in seconds. Two secrets may be active
at once (``REGROW_WEBHOOK_SECRET`` and, while rotating, ``REGROW_WEBHOOK_SECRET_PREVIOUS``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterable, Mapping

SIGNATURE_HEADER = "X-Regrow-Signature"
TIMESTAMP_HEADER = "X-Regrow-Timestamp"
DELIVERY_HEADER = "X-Regrow-Delivery"
SECRET_ENV = "REGROW_WEBHOOK_SECRET"
PREVIOUS_SECRET_ENV = "REGROW_WEBHOOK_SECRET_PREVIOUS"
MIN_SECRET_LENGTH = 16

_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


class WebhookConfigError(ValueError):
    """The receiver cannot start: no secret, no Prefect API, no or clashing configs."""


def signature(secret: str, body: bytes, timestamp: int | str) -> str:
    """The value of ``X-Regrow-Signature`` for a body sent at `timestamp`.

    Args:
        secret: the shared secret.
        body: the exact bytes sent as the request body.
        timestamp: unix seconds, as sent in ``X-Regrow-Timestamp``.

    Returns:
        ``"sha256=<hex digest>"``.
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def sign(secret: str, body: bytes, timestamp: int,
         delivery_id: str | None = None) -> dict[str, str]:
    """The headers of a signed delivery (for senders, tests and the benchmark).

    Args:
        secret: the shared secret.
        body: the exact bytes that will be sent.
        timestamp: unix seconds (``int(time.time())`` for a live request).
        delivery_id: when given, also the ``X-Regrow-Delivery`` header.

    Returns:
        ``Content-Type``, ``X-Regrow-Timestamp``, ``X-Regrow-Signature`` (and
        ``X-Regrow-Delivery``).
    """
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(int(timestamp)),
               SIGNATURE_HEADER: signature(secret, body, int(timestamp))}
    if delivery_id is not None:
        headers[DELIVERY_HEADER] = delivery_id
    return headers


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The accepted secrets: ``REGROW_WEBHOOK_SECRET`` and ``REGROW_WEBHOOK_SECRET_PREVIOUS``
    (blank values ignored)."""
    env = os.environ if environ is None else environ
    return [v for v in (env.get(SECRET_ENV, ""), env.get(PREVIOUS_SECRET_ENV, "")) if v.strip()]


def usable_secrets(secrets: Iterable[str] | None) -> tuple[bytes, ...]:
    """The secrets a receiver accepts, current first, without duplicates.

    Args:
        secrets: the secrets, or None for `secrets_from_env`.

    Returns:
        The non-blank secrets, encoded.

    Raises:
        WebhookConfigError: no secret, or one shorter than `MIN_SECRET_LENGTH` characters.
    """
    found = [s for s in (secrets_from_env() if secrets is None else secrets) if s and s.strip()]
    if not found:
        raise WebhookConfigError(
            f"no webhook secret: set {SECRET_ENV} (and, while rotating, {PREVIOUS_SECRET_ENV}), "
            "e.g. to the output of `openssl rand -hex 32`")
    short = [i for i, s in enumerate(found) if len(s) < MIN_SECRET_LENGTH]
    if short:
        raise WebhookConfigError(f"webhook secret(s) shorter than {MIN_SECRET_LENGTH} characters "
                                 "are refused; use e.g. `openssl rand -hex 32`")
    return tuple(dict.fromkeys(s.encode() for s in found))


def verify(secrets: Iterable[bytes], timestamp: str, sig: str, body: bytes, *,
           tolerance_seconds: int, now: float | None = None) -> str | None:
    """Check a delivery's signature and timestamp.

    Args:
        secrets: the accepted secrets (see `usable_secrets`).
        timestamp: the ``X-Regrow-Timestamp`` header ("" when missing).
        sig: the ``X-Regrow-Signature`` header ("" when missing).
        body: the raw body received.
        tolerance_seconds: largest allowed distance between the timestamp and now.
        now: the receiver's clock (unix seconds; default: the current time).

    Returns:
        None when the delivery is authentic, else what is wrong, in one sentence (never
        quoting a secret).
    """
    ts, sig = timestamp.strip(), sig.strip()
    if not sig:
        return f"missing {SIGNATURE_HEADER} header"
    if not ts:
        return f"missing {TIMESTAMP_HEADER} header"
    if not _TIMESTAMP.match(ts):
        return f"{TIMESTAMP_HEADER} must be unix seconds (an integer)"
    skew = abs((time.time() if now is None else now) - int(ts))
    if skew > tolerance_seconds:
        return (f"{TIMESTAMP_HEADER} is {int(skew)} s away from the receiver's clock "
                f"(tolerance {tolerance_seconds} s); sign each attempt afresh")
    given = sig.encode("latin-1", "replace")
    signed = f"{ts}.".encode() + body
    ok = False
    for secret in secrets:  # no early exit: every secret is compared
        expected = b"sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest().encode()
        ok |= hmac.compare_digest(expected, given)
    if not ok:
        return ("signature does not match (expected sha256=HMAC-SHA256(secret, "
                "'<timestamp>.' + body) in hex)")
    return None
