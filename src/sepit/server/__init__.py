"""`sepit serve`: the HTTP API and web page over a trained model (see :mod:`sepit.server.app` for endpoints and
limits). FastAPI and uvicorn are imported only here, never on the core import path."""

from sepit.server.limits import ServerLimits

__all__ = ["ServerLimits", "asgi_app", "create_app"]


def __getattr__(name: str):
    if name in ("asgi_app", "create_app"):
        from sepit.server import app

        return getattr(app, name)
    raise AttributeError(name)
