"""What travels between the fleet server and a device, and how a device proves it belongs.

A model crosses the wire as a list of arrays in a fixed key order (the keys, the class names
and the round travel beside it as JSON text in Flower's config / metrics dicts), cast to
``fleet.wire_dtype`` (float16 halves the bytes; the server averages in float64 and stores
float32).

Authentication: when a fleet token is set (``fleet.token`` or ``$EDGECL_FLEET_TOKEN``, the
environment wins), every round carries a fresh random nonce and a device signs its reply
with ``HMAC-SHA256(token, "nonce:round:device")``; the server refuses (drops and logs) any
reply whose signature does not verify. Off loopback the server and the device refuse to start
without TLS certificates and a token (:func:`check_security`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets

import numpy as np

from edgecl.errors import ConfigError
from edgecl.tls import check_cert_and_key, check_pem, read_pem

log = logging.getLogger(__name__)

TOKEN_ENV = "EDGECL_FLEET_TOKEN"
WIRE_DTYPES = ("float16", "float32")


def to_wire(arrays: dict[str, np.ndarray], dtype: str = "float16") -> tuple[list[str], list[np.ndarray]]:
    """Split named arrays into a key list and an array list in that order, cast for the wire.

    Args:
        arrays: key -> array.
        dtype: ``float16`` or ``float32``.

    Returns:
        ``(keys, arrays)``. With ``float16``, a tensor holding a value beyond float16's range
        (65504; a BatchNorm running variance can) travels as float32: cast, it would arrive
        as infinity and the server would refuse the whole update.
    """
    keys = list(arrays)
    return keys, [_for_wire(np.asarray(arrays[k]), np.dtype(dtype)) for k in keys]


def _for_wire(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.float16 and array.size:
        finite = np.abs(array[np.isfinite(array)]) if array.dtype.kind == "f" else np.abs(array)
        if finite.size and float(finite.max()) > float(np.finfo(np.float16).max):
            dtype = np.dtype(np.float32)
    return np.ascontiguousarray(array, dtype=dtype)


def from_wire(keys: list[str], arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Rebuild named float32 arrays from the wire.

    Args:
        keys: the key of each array.
        arrays: the arrays.

    Returns:
        key -> float32 array.

    Raises:
        ValueError: the lengths differ.
    """
    if len(keys) != len(arrays):
        raise ValueError(f"{len(keys)} keys for {len(arrays)} arrays")
    return {k: np.asarray(a, dtype=np.float32) for k, a in zip(keys, arrays)}


def dumps(obj) -> str:
    """Compact JSON text for Flower's scalar-valued config and metrics dicts."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def loads(text, default=None):
    """Parse JSON text from a config/metrics dict (``default`` when absent or empty)."""
    if text is None or text == "":
        return default
    return json.loads(text if isinstance(text, str) else bytes(text).decode())


def resolve_token(configured: str) -> str:
    """The fleet token, stripped: ``$EDGECL_FLEET_TOKEN`` when set to more than blanks, else
    the configured one (before, a blank one counted as a token off loopback, and a trailing
    blank on one side of the fleet failed every signature)."""
    return os.environ.get(TOKEN_ENV, "").strip() or (configured or "").strip()


def new_nonce() -> str:
    """A fresh random nonce for one round (128 bits, hex)."""
    return secrets.token_hex(16)


def sign(token: str, nonce: str, round_no: int, device: str) -> str:
    """A device's signature of its reply (empty when there is no token)."""
    if not token:
        return ""
    msg = f"{nonce}:{int(round_no)}:{device}".encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def server_signature(token: str, nonce: str, round_no: int) -> str:
    """The server's signature of a round's instructions (empty when it has no token): a device
    whose token differs learns so at once, instead of training for updates the server refuses,
    and never adopts a model from a server that does not hold the fleet's token."""
    if not token:
        return ""
    msg = f"server:{nonce}:{int(round_no)}".encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def server_is_authentic(token: str, config: dict) -> bool:
    """Whether a round's instructions carry the signature this device's token expects.

    Args:
        token: the device's resolved fleet token ("" for none).
        config: the round's instructions (``round``, ``nonce``, ``server_auth``).

    Returns:
        True when both sides hold the same token (or neither has one).
    """
    expected = server_signature(token, str(config.get("nonce", "")), int(config.get("round", 0)))
    return hmac.compare_digest(expected, str(config.get("server_auth", "") or ""))


def verify(token: str, nonce: str, round_no: int, device: str, signature: str) -> bool:
    """Check a reply's signature in constant time (always true when the server has no token)."""
    if not token:
        return True
    return hmac.compare_digest(sign(token, nonce, round_no, device), str(signature or ""))


def is_loopback(address: str) -> bool:
    """True for ``127.x.x.x``, ``::1`` and ``localhost`` addresses (``host:port``).

    Args:
        address: ``host:port`` or ``[v6]:port``.

    Returns:
        Whether traffic to/from it stays on this machine.
    """
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_tls_material(certs: dict[str, str], refuse_dates: bool = True) -> None:
    """Load the PEM files as TLS will (Python's ``ssl``): a certificate that does not parse, or
    a key that does not belong to its certificate, is named here in one line; gRPC only says
    "Failed to bind" or fails the handshake. A certificate outside its validity period is
    refused too (:func:`check_validity`): every device's handshake would fail.

    Args:
        certs: config key -> PEM path (empty: not set).
        refuse_dates: refuse a certificate outside its validity period (else warn).

    Raises:
        ConfigError: which file (or pair) is wrong and what the TLS library says.
    """
    import ssl

    cert, key, ca = (certs.get(k) for k in ("fleet.server_cert", "fleet.server_key",
                                            "fleet.ca_cert"))
    if cert and key:
        check_cert_and_key("fleet.server_cert", "fleet.server_key", cert, key)
        check_grpc_key("fleet.server_cert", cert)
    for name in ("fleet.server_cert", "fleet.ca_cert"):
        if certs.get(name):
            check_validity(name, certs[name], refuse=refuse_dates)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"config key 'fleet.ca_cert': {ca} is not a usable CA certificate "
                              f"({getattr(exc, 'reason', None) or exc})") from None


EXPIRY_WARNING_DAYS = 14
"""A certificate that expires within this many days draws a warning at start."""


def check_validity(key: str, path: str, now=None, refuse: bool = True) -> None:
    """Refuse a certificate that has expired or is not valid yet; warn when it expires soon.

    The first certificate of the file is read (the server's own, or the CA's). Without the
    ``cryptography`` package (installed with Flower) nothing is checked.

    Args:
        key: the config key naming the file (for the message).
        path: the PEM file.
        now: the time to check against (UTC ``datetime``; default: now).
        refuse: raise for a certificate outside its validity period; False (a device's
            runtime: detection must not stop for it, and a board that booted without a
            battery-backed clock reads a date years back until its time is set) logs the same
            line as a warning, and the fleet client retries until the dates pass.

    Raises:
        ConfigError: one line naming the key, the file and the date (``refuse`` only).
    """
    import datetime

    try:
        from cryptography import x509
    except ImportError:
        return
    try:
        cert = x509.load_pem_x509_certificate(read_pem(path))
    except (OSError, ValueError):
        return  # unreadable or not one certificate: the TLS library's own check says so
    now = now or datetime.datetime.now(datetime.timezone.utc)
    start, end = _validity(cert)
    problem = None
    if now > end:
        problem = (f"config key '{key}': {path} expired on {end:%Y-%m-%d %H:%M} UTC; every TLS "
                   f"handshake with it fails (renew the certificate)")
    elif now < start:
        problem = (f"config key '{key}': {path} is not valid before {start:%Y-%m-%d %H:%M} UTC "
                   f"(check this machine's clock, or the certificate's dates)")
    if problem and refuse:
        raise ConfigError(problem)
    if problem:
        log.warning("%s; detection goes on, and the fleet client retries until the dates pass "
                    "(a renewed certificate, or this machine's clock set right)", problem)
        return
    if end - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        log.warning("config key '%s': %s expires on %s UTC; renew it before then", key, path,
                    f"{end:%Y-%m-%d %H:%M}")


def check_grpc_key(key: str, path: str) -> None:
    """Refuse a server certificate whose key gRPC's TLS does not take (Ed25519, Ed448, EC
    P-521: the server failed to bind with a traceback, or the devices retried for ever with
    "the connection was lost"). Without the ``cryptography`` package nothing is checked.

    Args:
        key: the config key naming the file (for the message).
        path: the certificate, PEM.

    Raises:
        ConfigError: another key type, named, with the kinds that work.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
    except ImportError:
        return
    try:
        public = x509.load_pem_x509_certificate(read_pem(path)).public_key()
    except (OSError, ValueError):
        return  # not one certificate: check_cert_and_key says so
    if isinstance(public, rsa.RSAPublicKey) or (
            isinstance(public, ec.EllipticCurvePublicKey)
            and public.curve.name in ("secp256r1", "secp384r1")):
        return
    kind = (f"an EC {public.curve.name} key" if isinstance(public, ec.EllipticCurvePublicKey)
            else f"an {type(public).__name__.removeprefix('_').replace('PublicKey', '')} key")
    raise ConfigError(f"config key '{key}': {path} holds {kind}, which the fleet's TLS (gRPC) "
                      f"does not take: make it with an RSA key (openssl req -newkey rsa:2048 "
                      f"...) or an EC P-256 or P-384 key")


def _validity(cert):
    """A certificate's ``(not before, not after)`` as timezone-aware UTC datetimes."""
    import datetime

    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    utc = datetime.timezone.utc
    return cert.not_valid_before.replace(tzinfo=utc), cert.not_valid_after.replace(tzinfo=utc)


def check_security(address: str, *, certs: dict[str, str], token: str, role: str,
                   refuse_dates: bool = True) -> None:
    """Refuse to run off loopback without TLS certificates and a fleet token.

    Args:
        address: the server address (``host:port``).
        certs: role's certificate paths by config key (``fleet.ca_cert``, ...); all are
            required off loopback and each must be a readable file when given.
        token: the resolved fleet token.
        role: ``server`` or ``device`` (for the message).
        refuse_dates: refuse a certificate outside its validity period (else warn: see
            :func:`check_validity`).

    Raises:
        ConfigError: one line naming what is missing.
    """
    for key, path in certs.items():
        if path:
            check_pem(key, path)
    _check_tls_material(certs, refuse_dates)
    if is_loopback(address):
        return
    missing = [k for k, v in certs.items() if not v]
    if not token:
        missing.append(f"fleet.token (or ${TOKEN_ENV})")
    if missing:
        raise ConfigError(f"fleet {role} on {address} (not loopback) needs TLS and a token: "
                          f"set {', '.join(missing)}")
    from edgecl.runtime.server import MIN_TOKEN_CHARS

    if len(token) < MIN_TOKEN_CHARS:
        _warn_short_token(len(token), MIN_TOKEN_CHARS)


@functools.lru_cache(maxsize=None)
def _warn_short_token(chars: int, least: int) -> None:
    """Say once per process that the token is short (before: again at every reconnection,
    four times in 20 s)."""
    log.warning("the fleet token has %d characters: use %d or more (e.g. openssl rand -hex "
                "16), the same on the server and every device", chars, least)


def device_label(value) -> str:
    """A device's name as a reply gives it, fit for the log and the round record: control
    characters (a newline would forge log lines) written as escapes, at most 100 characters.

    Args:
        value: the reply's ``device`` field (any type).

    Returns:
        The name; the text as sent where it is printable and short.
    """
    text = str(value)
    clean = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                    for ch in text[:100])
    return clean[:100]


def averages(config: dict, device: str) -> bool:
    """Whether a round's adoption request says that its model averages ``device``'s update
    (its ``averaged`` list; absent from a server of an older release, or unreadable: False,
    so the device counts none of its samples as learnt by the model).

    Args:
        config: the evaluate request's config.
        device: this device's name (as it signs its replies).
    """
    try:
        averaged = loads(config.get("averaged"), [])
    except (ValueError, TypeError):
        return False
    return isinstance(averaged, list) and device_label(device) in averaged
