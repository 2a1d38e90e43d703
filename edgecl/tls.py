"""TLS material given in the config (the console's and the fleet's): checked at start, in one line.

A server library told to use a file that is not a certificate, or a key that does not belong to
its certificate, fails late and vaguely (gRPC says "Failed to bind", uvicorn dies in its start-up
thread). These checks load the files as Python's ``ssl`` will and name the config key and the
file that is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgecl.errors import ConfigError
from edgecl.input_files import MAX_PEM_BYTES, read_input_bytes


def read_pem(path: str | Path) -> bytes:
    """A PEM certificate (chain) or key file's bytes, bounded (:data:`MAX_PEM_BYTES`).

    Raises:
        OSError: missing or unreadable; :class:`~edgecl.input_files.InputFileError` when it is
            no regular file or too large.
    """
    return read_input_bytes(path, MAX_PEM_BYTES, "a PEM file")


def check_pem(key: str, path: str | Path) -> None:
    """Refuse a missing file, or one that is not PEM text of the kind ``key`` needs.

    Args:
        key: the config key naming the file (``..._key``: a private key; else a certificate).
        path: the file.

    Raises:
        ConfigError: not found, unreadable, or no ``-----BEGIN ...-----`` block of that kind.
    """
    path = Path(path)
    kind = "private key" if key.endswith("_key") else "certificate"
    if not path.is_file():
        why = "is not a file" if path.exists() else "not found"
        raise ConfigError(f"config key '{key}': {kind} file {why}: {path}")
    try:
        raw = read_input_bytes(path, MAX_PEM_BYTES, f"a {kind} file")
    except OSError as exc:
        raise ConfigError(f"config key '{key}': cannot read {path}: "
                          f"{exc.strerror or exc}") from None
    text = raw.decode("ascii", errors="replace")
    wanted = "PRIVATE KEY" if key.endswith("_key") else "CERTIFICATE"
    if not re.search(rf"-----BEGIN [A-Z ]*{wanted}-----", text):
        raise ConfigError(f"config key '{key}': {path} is not a PEM file holding a "
                          f"{wanted.lower()} (-----BEGIN ...{wanted}-----)")
    if wanted == "PRIVATE KEY" and ("ENCRYPTED" in text or "Proc-Type: 4,ENCRYPTED" in text):
        raise ConfigError(f"config key '{key}': {path} is an encrypted private key; a device "
                          f"starts unattended, so give it the key unencrypted (openssl pkey "
                          f"-in {path.name} -out plain.key) and protect the file instead")


def check_cert_and_key(cert_key: str, key_key: str, cert: str | Path, key: str | Path) -> None:
    """Load a certificate chain and its private key as a TLS server will.

    Args:
        cert_key: config key of the certificate (for the message).
        key_key: config key of the private key.
        cert: the certificate (chain) file, PEM.
        key: the private key file, PEM (unencrypted: a device starts unattended).

    Raises:
        ConfigError: either file fails :func:`check_pem`, or they do not load together (a key
            of another certificate, an encrypted key, a damaged certificate).
    """
    import ssl

    check_pem(cert_key, cert)
    check_pem(key_key, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"config keys '{cert_key}' and '{key_key}': {cert} and {key} are not a "
                          f"certificate and its own unencrypted private key "
                          f"({getattr(exc, 'reason', None) or exc})") from None
