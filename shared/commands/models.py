"""``sentiment-models``: the model registry — list, show, promote, roll back, prune.

    sentiment-models list                   # versions, dates, metrics, LATEST, who serves what
    sentiment-models show v0004             # one version's manifest: metrics, decision, files
    sentiment-models promote v0003          # LATEST -> v0003 (workers follow within seconds)
    sentiment-models rollback               # LATEST -> the version before it
    sentiment-models prune --keep 3         # delete all but the newest 3 (never LATEST or the
                                            # version a rollback would go back to)
    sentiment-models keygen                 # a key pair for signed versions (shared.signing)
    sentiment-models card -o docs/model-card.md   # the served version's model card

Every change of LATEST is one atomic replace (and, with ``MODEL_STORE_URL``, one PUT of the
remote pointer); running workers follow it with their hot reload, and the bot's ``/model``
shows what they announce.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared import announcements, model_card
from shared.announcements import served_by
from shared.cli import command_parser
from shared.config import Settings, settings_or_exit
from shared.log import configure_logging
from shared.queues import RedisUnavailable, connect
from shared.store import ModelStore, StoreError

#: The card the docs carry, checked by ``card --check`` when no ``-o`` is given.
DEFAULT_CARD = Path("docs/model-card.md")


def _remote(settings: Settings) -> Any:
    if not settings.model_store_url:
        return None
    from shared.remote import RemoteStore

    return RemoteStore(settings.model_store_url, settings.model_name)


def _workers(settings: Settings) -> dict[str, list[str]]:
    """{version: [worker, ...]} from the workers' announcements ({} without Redis)."""
    try:
        conn = connect(settings.redis_url, check=True)
        serving = served_by(conn)
    except (RedisUnavailable, OSError):
        return {}
    out: dict[str, list[str]] = {}
    for worker, model_version in sorted(serving.items()):
        out.setdefault(model_version.rpartition("/")[2], []).append(worker)
    return out


def list_versions(store: ModelStore, settings: Settings) -> list[dict[str, Any]]:
    latest, previous = store.latest(), store.previous()
    workers = _workers(settings)
    rows: list[dict[str, Any]] = []
    for version in store.versions():
        try:
            manifest = store.resolve(version).manifest
        except StoreError as exc:
            rows.append({"version": version, "error": str(exc)})
            continue
        test = manifest.get("metrics", {}).get("test", {})
        rows.append(
            {
                "version": version,
                "created": manifest.get("created"),
                "architecture": manifest.get("architecture"),
                "test_accuracy": test.get("accuracy"),
                "latest": version == latest,
                "previous": version == previous,
                "decided": bool(manifest.get("decision")),
                "workers": workers.get(version, []),
            }
        )
    return rows


def cmd_list(store: ModelStore, settings: Settings, as_json: bool) -> int:
    rows = list_versions(store, settings)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions of {store.name!r} in {store.root}")
        return 0
    print(f"{'version':<8} {'created':<26} {'arch':<10} {'test acc':>8}  {'':<8} workers")
    for r in rows:
        if "error" in r:
            print(f"{r['version']:<8} unreadable: {r['error']}")
            continue
        mark = "LATEST" if r["latest"] else ("previous" if r["previous"] else "")
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        print(
            f"{r['version']:<8} {r['created'] or '-':<26} {r['architecture'] or '-':<10} "
            f"{acc:>8}  {mark:<8} {len(r['workers'])} {' '.join(r['workers'][:4])}"
        )
    return 0


def cmd_show(store: ModelStore, version: str) -> int:
    published = store.resolve(version)
    print(json.dumps({"path": str(published.path), **published.manifest}, indent=2))
    return 0


def cmd_move(store: ModelStore, settings: Settings, version: str | None) -> int:
    """promote VERSION, or roll back (version None)."""
    before = store.latest()
    if version is None:
        target = store.rollback()
        action = "rolled back"
    else:
        target = store.resolve(version, verify=True).version
        store.set_latest(target, action="promote")
        action = "promoted"
    remote = _remote(settings)
    if remote is not None:
        remote.upload(store.resolve(target), set_latest=False)
        remote.set_latest(target)
    summary = f"{target} {action} by an operator (was {before})"
    try:
        conn = connect(settings.redis_url)
        announcements.announce_decision(conn, {"version": target, "summary": summary})
    except (RedisUnavailable, OSError) as exc:  # LATEST moved; only /model's line is missing
        print(f"sentiment-models: not announced in Redis: {exc}", file=sys.stderr)
    print(f"LATEST: {before} -> {target} ({action})")
    return 0


def cmd_prune(store: ModelStore, keep: int) -> int:
    protected = {store.latest(), store.previous()}
    versions = store.versions()
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in protected]
    for version in doomed:
        store.remove(version)
    kept = len(versions) - len(doomed)
    print(f"removed {len(doomed)} version(s): {' '.join(doomed) or '-'}; kept {kept}")
    return 0


def cmd_card(store: ModelStore, version: str, output: Path | None, check: bool) -> int:
    card = model_card.render(store.resolve(version))
    if check and output is None:
        output = DEFAULT_CARD
    if output is None:
        print(card, end="")
        return 0
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != card:
            print(
                f"sentiment-models: {output} is not the card of {version}: "
                f"run sentiment-models card {version} -o {output}",
                file=sys.stderr,
            )
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(card, encoding="utf-8")
    print(f"wrote {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("sentiment-models", __doc__, epilog=True)
    sub = p.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="versions, metrics, LATEST, who serves what")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("show", help="one version's manifest").add_argument("version", help="e.g. v0003")
    sub.add_parser("promote", help="make VERSION the LATEST").add_argument(
        "version", help="e.g. v0003"
    )
    sub.add_parser("rollback", help="LATEST back to the version before it")
    prune = sub.add_parser("prune", help="delete old versions")
    prune.add_argument("--keep", type=int, required=True, help="newest versions to keep (>= 1)")
    card = sub.add_parser("card", help="a version's model card, generated from its manifest")
    card.add_argument("version", nargs="?", default="LATEST", help="default: LATEST")
    card.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    card.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when --output (default: docs/model-card.md) differs from the card",
    )
    sub.add_parser(
        "keygen",
        help="a new key pair for signed versions: MODEL_SIGNING_KEY (trainer), "
        "MODEL_VERIFY_KEY (workers)",
    )
    args = p.parse_args(argv)
    if args.command == "keygen":
        from shared.signing import generate

        private, public = generate()
        print(f"MODEL_SIGNING_KEY={private}\nMODEL_VERIFY_KEY={public}")
        return 0
    settings = settings_or_exit("sentiment-models")
    configure_logging(settings.log_level, settings.log_format)
    store = ModelStore(settings.model_dir, settings.model_name)
    try:
        if args.command == "list":
            return cmd_list(store, settings, args.json)
        if args.command == "show":
            return cmd_show(store, args.version)
        if args.command == "promote":
            return cmd_move(store, settings, args.version)
        if args.command == "rollback":
            return cmd_move(store, settings, None)
        if args.command == "card":
            return cmd_card(store, args.version, args.output, args.check)
        if args.keep < 1:
            p.error("--keep must be at least 1")
        return cmd_prune(store, args.keep)
    except StoreError as exc:
        print(f"sentiment-models: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
