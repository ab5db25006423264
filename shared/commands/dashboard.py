"""``sentiment-dashboard``: rq-dashboard on our queues, behind a password and same-origin checks.

rq-dashboard alone serves without auth by default, and its buttons (empty a queue, delete or
requeue jobs) are plain POSTs, one even a GET, that any page on another origin can make a
logged-in browser send.  This wraps its Flask app (pinned 0.9.0, our JSON serializer):

* HTTP basic auth is required (``RQ_DASHBOARD_USERNAME`` / ``RQ_DASHBOARD_PASSWORD``): it
  refuses to start without them;
* every request that changes something (any method but GET/HEAD/OPTIONS, and rq-dashboard's
  requeue/delete/empty/compact routes whatever the method) must come from the dashboard's own
  origin (``Origin``, else ``Referer``): a cross-site request gets 403 and changes nothing.

    RQ_DASHBOARD_USERNAME=ops RQ_DASHBOARD_PASSWORD=... sentiment-dashboard --port 9181
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from shared.cli import command_parser
from shared.config import settings_or_exit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: rq-dashboard's routes that change state (``/requeue/<queue>`` also answers GET).
MUTATING = re.compile(r"/(?:requeue|delete|empty|compact)(?:/|$)")
MIN_PASSWORD_CHARS = 12


def credentials(env: Mapping[str, str]) -> tuple[str, str]:
    """The basic-auth pair; ValueError naming the variable when missing or weak."""
    user = env.get("RQ_DASHBOARD_USERNAME", "").strip()
    password = env.get("RQ_DASHBOARD_PASSWORD", "").strip()
    if not user or not password:
        raise ValueError("set RQ_DASHBOARD_USERNAME and RQ_DASHBOARD_PASSWORD (basic auth)")
    if len(password) < MIN_PASSWORD_CHARS or password.lower() in ("change-me", "password"):
        raise ValueError(
            f"RQ_DASHBOARD_PASSWORD is too weak (at least {MIN_PASSWORD_CHARS} characters)"
        )
    return user, password


def build(redis_url: str, user: str, password: str) -> Any:
    """rq-dashboard's Flask app on ``redis_url``, with auth and the same-origin rule."""
    from flask import abort, request
    from rq.serializers import JSONSerializer
    from rq_dashboard.cli import make_flask_app
    from rq_dashboard.web import config as service_config
    from rq_dashboard.web import setup_rq_connection

    app = make_flask_app(None, user, password, "")
    app.config["DEPRECATED_OPTIONS"] = []
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    service_config.serializer = JSONSerializer

    @app.before_request
    def same_origin() -> None:
        if request.method in SAFE_METHODS and not MUTATING.search(request.path):
            return
        source = request.headers.get("Origin") or request.headers.get("Referer") or ""
        if urlsplit(source).netloc != request.host:
            abort(403, description="cross-site request refused")

    setup_rq_connection(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("sentiment-dashboard", __doc__, whole=True)
    parser.add_argument("--bind", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9181, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    settings = settings_or_exit("sentiment-dashboard")
    try:
        user, password = credentials(os.environ)
    except ValueError as exc:
        print(f"sentiment-dashboard: {exc}", file=sys.stderr)
        return 2
    app = build(settings.redis_url, user, password)
    app.run(host=args.bind, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
