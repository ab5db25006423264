"""``sentiment-redis-acl``: Redis ACL users, one per component, each with only what it needs.

With one password every component could do anything to Redis (``FLUSHALL``, rewrite the served
version, read every vote).  Here each component logs in as its own user (``REDIS_URL`` is
``redis://worker:PASSWORD@redis:6379/0``), the ``default`` user is off, and:

* no application user may run dangerous commands (``FLUSHALL``, ``CONFIG SET``, ``KEYS``,
  ``DEBUG``, ``SHUTDOWN``...) except the few named below;
* the API and the bot write jobs, batches, votes and rate counters, but only read what workers
  and the trainer announce; the trainer reads votes and writes only its lock, its state and its
  decision; the exporter and KEDA only read;
* ``admin`` (operators' commands: ``sentiment-models``, ``sentiment-enqueue``,
  ``sentiment-feedback``, the dashboard) may do everything.

Passwords come from the environment (``REDIS_PASSWORD_<USER>``, e.g. ``REDIS_PASSWORD_WORKER``)
and only their SHA-256 goes into the file::

    sentiment-redis-acl > users.acl   # redis-server --aclfile users.acl
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence

from shared.cli import command_parser

#: Commands every application user needs beyond the safe ones: RQ names its connections and
#: reads the client list (worker IP), our memory checks read INFO and CONFIG GET.
_COMMON = "+@all -@dangerous +info +config|get +client|setname +client|list +client|id"
_RQ = "~rq:* &rq:*"

RULES: dict[str, str] = {
    "worker": f"{_COMMON} {_RQ} ~sentiment:processing* ~sentiment:alive:* "
    "~sentiment:served-* %R~sentiment:limits*",
    "api": f"{_COMMON} {_RQ} ~sentiment:batch:* ~sentiment:feedback* ~sentiment:limits* "
    "%R~sentiment:served-* %R~sentiment:model-decision* %R~sentiment:processing* "
    "%R~sentiment:alive:*",
    "bot": f"{_COMMON} {_RQ} ~sentiment:feedback* ~sentiment:answer:* ~sentiment:limits* "
    "%R~sentiment:served-* %R~sentiment:model-decision*",
    "trainer": f"{_COMMON} %R~sentiment:feedback* ~sentiment:trainer:* "
    "~sentiment:model-decision* %R~sentiment:served-*",
    "exporter": "+@read +@connection -@dangerous +info +client|setname %R~rq:* %R~sentiment:*",
    "keda": "+llen +ping +info +auth +hello %R~rq:queue:*",
    "admin": "+@all ~* &*",
}


def password_variable(user: str) -> str:
    return f"REDIS_PASSWORD_{user.upper()}"


def acl_file(passwords: Mapping[str, str]) -> str:
    """The ACL file for the users that have a password (``default`` always off)."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for user, rules in RULES.items():
        password = passwords.get(user)
        if not password:
            continue
        digest = hashlib.sha256(password.encode()).hexdigest()
        lines.append(f"user {user} on #{digest} resetkeys resetchannels {rules}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("sentiment-redis-acl", __doc__, whole=True)
    parser.parse_args(argv)
    passwords = {u: os.environ.get(password_variable(u), "") for u in RULES}
    missing = [password_variable(u) for u, p in passwords.items() if not p]
    if len(missing) == len(RULES):
        print(f"sentiment-redis-acl: set at least one of {', '.join(missing)}", file=sys.stderr)
        return 2
    weak = [password_variable(u) for u, p in passwords.items() if p and len(p) < 16]
    if weak:
        print(f"sentiment-redis-acl: at least 16 characters: {', '.join(weak)}", file=sys.stderr)
        return 2
    sys.stdout.write(acl_file(passwords))
    return 0


if __name__ == "__main__":
    sys.exit(main())
