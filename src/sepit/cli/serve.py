"""``sepit serve``: the HTTP API and web page over a trained model (binds 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from sepit.cli import add_command
from sepit.cli.ask import retrieval_args
from sepit.precisions import PRECISIONS

EPILOG = """example:
  sepit serve --model runs/demo/model --host 127.0.0.1 --port 8000
then open http://127.0.0.1:8000/ (web page) or http://127.0.0.1:8000/docs (API).
Binding another host (e.g. 0.0.0.0) exposes the server to the network: it has no authentication.
Behind a reverse proxy that keeps the Host header: sepit serve --allowed-hosts sepit.example.org"""


def register(sub: argparse._SubParsersAction) -> None:
    from sepit.server.limits import ServerLimits

    p = add_command(sub, "serve", help="serve the HTTP API and web page for a trained model", epilog=EPILOG)
    p.add_argument("--model", metavar="DIR", help="trained model directory (default: the one `sepit demo` "
                                                 "registered in $SEPIT_HOME/default_model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--allowed-hosts", metavar="NAMES", default="",
                   help="comma-separated names the Host header may carry besides the bound address, localhost, "
                        "127.0.0.1 and ::1 (e.g. the server's DNS name behind a proxy; '*' allows any). Other Hosts "
                        "get 400: a web page elsewhere cannot reach the API by DNS rebinding")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="weights' precision: auto (default) = bf16 where the hardware runs it natively (CUDA with "
                        "bf16, CPUs with AMX / AVX512-BF16), else fp32")
    p.add_argument("--questions", metavar="YAML", help="annotation question set (default: the standard set)")
    retrieval_args(p)
    lim = p.add_argument_group("limits (see /docs)")
    for f in fields(ServerLimits):
        lim.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                         metavar="N", help=f"default {f.default}")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from sepit.annotate import load_questions
    from sepit.api import load
    from sepit.errors import SepitError
    from sepit.log import get_logger
    from sepit.server.app import asgi_app
    from sepit.server.limits import ServerLimits

    try:
        limits = ServerLimits(**{f.name: getattr(args, f.name) for f in fields(ServerLimits)})
    except ValueError as e:
        raise SepitError(str(e)) from None
    questions = load_questions(args.questions)
    qa = load(args.model, device=args.device, precision=args.precision, index=args.index,
              retrieval=not args.no_retrieval)
    get_logger(__name__).info("serving %s on http://%s:%d/ (API docs at /docs)", qa.name, args.host, args.port)
    allowed = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    uvicorn.run(asgi_app(qa, limits, questions, host=args.host, allowed_hosts=allowed), host=args.host,
                port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
