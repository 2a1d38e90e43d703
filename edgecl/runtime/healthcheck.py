"""A container's or a service watchdog's health check of a running device: ``GET /healthz``.

``python3 -m edgecl.runtime.healthcheck [CONFIG]`` (``Dockerfile.jetson``'s ``HEALTHCHECK``)
asks the runtime's own server, at the address, scheme and console token its configuration
gives (``server.port``, ``server.tls_cert``, ``server.token`` or ``$EDGECL_TOKEN``, as the
runtime resolves them; never through a proxy), and exits 0 when it answers 200 with edgecl's
JSON status, else 1 with one line saying why (while another client on this machine is refused
for wrong tokens, the server answers this address's check with the status alone, 503 when
stuck). ``$EDGECL_HEALTH_URL`` replaces the address. Before, the check read the token from the
environment only: a token written in the YAML made every check a 401, the container unhealthy.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_CONFIG = "/etc/edgecl/edgecl.yaml"
URL_ENV = "EDGECL_HEALTH_URL"
TIMEOUT_S = 4.0


def health_url(server) -> str:
    """Where a check on this machine reaches the runtime's ``/healthz``.

    Args:
        server: the configuration's ``server`` section.

    Returns:
        ``http(s)://HOST:PORT/healthz``: loopback for a server bound to every address
        (``0.0.0.0``, ``::``), else its own host; https when ``server.tls_cert`` is set.
    """
    host = server.host.strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            host = f"[{host.strip('[]')}]"
    except ValueError:
        pass  # a host name
    scheme = "https" if server.tls_cert else "http"
    return f"{scheme}://{host}:{server.port}/healthz"


def url_problem(url: str) -> str | None:
    """Why ``url`` is no address a check can ask, in words (``None`` when it is one): an
    ``http`` or ``https`` URL with a host (and a port in 1..65535 where it names one; the
    scheme's own otherwise), no blank, control character or password (before, ``not a url``
    printed a traceback, ``file:///etc/passwd`` was read as an answer and a line break in
    it sent a header of its own)."""
    from urllib.parse import urlsplit

    if any(c.isspace() or not c.isprintable() for c in url):  # a line break would end the
        return "holds a blank or a control character (no URL does)"  # request line early
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is no URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s)://HOST:PORT/healthz address"
    if parts.username is not None or parts.password is not None:
        return "holds a user name or password (the console takes a token: server.token)"
    if port == 0:
        return "names port 0"
    return None


def check(config_path: str = DEFAULT_CONFIG) -> str | None:
    """Ask the running device whether it is healthy.

    Args:
        config_path: the device's configuration file.

    Returns:
        ``None`` when ``/healthz`` answered 200; else why not, in one line.
    """
    from edgecl.config import load_config
    from edgecl.errors import EdgeclError
    from edgecl.runtime.server import TOKEN_ENV, resolve_token, token_problem

    try:
        server = load_config(config_path, []).server
    except EdgeclError as exc:
        return f"cannot read the configuration: {exc}"
    url = os.environ.get(URL_ENV, "").strip()
    if not url and not server.enabled:
        return (f"{config_path} has server.enabled: false, so the runtime serves no /healthz "
                f"(set it to true, or give the address in ${URL_ENV})")
    url = url or health_url(server)
    problem = url_problem(url)
    if problem is not None:  # quoted, control characters escaped, a password as ***
        from edgecl.runtime.sources.base import redact_uri

        return f"${URL_ENV}={redact_uri(url)!r} {problem}"
    token = resolve_token(server.token)
    problem = token_problem(token)
    if problem is not None:  # before: a traceback from the header's encoding
        return f"the console token (server.token or ${TOKEN_ENV}) {problem}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context()
    context.check_hostname = False  # a local check of the device's own certificate
    context.verify_mode = ssl.CERT_NONE
    # no proxy: the device is on this machine (a container's http(s)_proxy sent the check to
    # the proxy, and a healthy device was reported as not answering)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response:
            body = response.read(64 * 1024)
    except urllib.error.HTTPError as exc:  # edgecl's one-line JSON error, or another server's
        said = exc.read(300).decode("utf-8", "replace")  # page (said in one line, cut short)
        try:
            said = str(json.loads(said).get("error") or said)
        except (ValueError, AttributeError):
            pass
        said = " ".join(said.split())
        return f"{url} answered {exc.code}: {said[:160]}{'...' if len(said) > 160 else ''}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} did not answer: {getattr(exc, 'reason', exc)}"
    except http.client.HTTPException:  # not HTTP at all (an ssh server, say)
        return f"{url} answered, but not as edgecl does (not HTTP): another program there?"
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        status = None
    if not isinstance(status, str):  # another program on the port (the console did not start)
        return f"{url} answered, but not as edgecl does (no JSON status): another program there?"
    return None


def main(argv: list[str] | None = None) -> int:
    """Exit code of the check: 0 healthy, 1 not (one line on stderr)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:  # before: the words after the config were dropped, exit 0
        print(f"unhealthy: one argument is taken (the config file), got {len(args)}: "
              f"{' '.join(args)[:200]}", file=sys.stderr)
        return 1
    problem = check(args[0] if args else DEFAULT_CONFIG)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
