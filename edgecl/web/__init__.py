"""The field console: HTTP API and offline pages (Live, Label, Models, Forgetting).

The web layer has no threads and no state of its own: :func:`create_app` turns the runtime's
:class:`ConsoleHooks` into an ASGI app, which :class:`edgecl.runtime.server.StatusServer` serves.
"""

from edgecl.web.app import create_app
from edgecl.web.hooks import ConsoleHooks

__all__ = ["ConsoleHooks", "create_app"]
