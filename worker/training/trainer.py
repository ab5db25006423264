"""The long-running trainer: retrains on IMDB plus user feedback and publishes only what is better.

One cycle (``run_cycle``):

1. read the votes that count (a voter's latest per message), keep at most ``max_per_user`` per
   voter, and hold about ``holdout_fraction`` of the voters out whole when there are at least
   ``min_holdout_voters`` (``worker.training.votes``);
2. train a challenger on the training data plus the remaining votes (each ``repeat`` times),
   published into a private scratch store (nothing visible to workers);
3. score challenger and the serving champion on the same sets (``worker.training.gate``): the
   fixed test split, single sentences of it, the held-out voters' votes (one weight per voter),
   and a canary of texts nobody voted about that share the votes' words; the votes trained on
   are scored too, for the record only;
4. publish into the real store only when the challenger is not worse beyond the tolerance on
   any set: a copy of the scratch version with the decision in its manifest, the usual atomic
   publish (and upload to ``MODEL_STORE_URL``), then its analysis report ``--compare``d with the
   champion; otherwise LATEST stays and the reasons are logged.  Either way the decision is
   announced in Redis (the bot's ``/model``).

``sentiment-trainer`` runs cycles when ``min_feedback`` new votes arrived or every
``interval_s``; one trainer at a time holds a Redis lock with an expiry (refreshed while it
works), so a killed trainer's lock lapses by itself and a second trainer waits or exits.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from redis import Redis
from redis.exceptions import RedisError

from shared import announcements, feedback
from shared.aclimdb import ensure_aclimdb
from shared.config import Settings, env_float, env_int
from shared.datasets import detect_format, read_reviews
from shared.store import ModelStore
from worker.training import votes
from worker.training.config import TrainConfig
from worker.training.gate import EvalSet, Tolerances, compare, decide, label_ids
from worker.training.lock import RedisLock
from worker.training.sentences import sentences_from
from worker.training.train import train

log = structlog.get_logger(__name__)

STATE_KEY = "sentiment:trainer:state"


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    return env_float(env, name, default, 0.0, 1.0)


@dataclass(frozen=True)
class TrainerSettings:
    """When to retrain and what a challenger must show (``TRAINER_*``, ``FEEDBACK_*``)."""

    min_feedback: int = 20
    interval_s: int = 0
    check_every_s: int = 30
    lock_ttl_s: int = 300
    holdout_fraction: float = 0.2
    min_holdout_voters: int = 3
    max_per_user: int = feedback.DEFAULT_MAX_PER_USER
    repeat: int = 5
    short_sentences: int = 2000
    report_limit: int = 5000
    tolerances: Tolerances = field(default_factory=Tolerances)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TrainerSettings:
        return cls(
            min_feedback=env_int(env, "TRAINER_MIN_FEEDBACK", 20, minimum=1),
            interval_s=env_int(env, "TRAINER_INTERVAL_S", 0),
            check_every_s=env_int(env, "TRAINER_CHECK_S", 30, minimum=1),
            lock_ttl_s=env_int(env, "TRAINER_LOCK_TTL_S", 300, minimum=3),
            holdout_fraction=_env_float(env, "TRAINER_HOLDOUT_FRACTION", 0.2),
            min_holdout_voters=env_int(env, "TRAINER_MIN_HOLDOUT_VOTERS", 3, minimum=2),
            max_per_user=env_int(env, "FEEDBACK_MAX_PER_USER", feedback.DEFAULT_MAX_PER_USER, 1),
            repeat=env_int(env, "TRAINER_FEEDBACK_REPEAT", 5, minimum=1, maximum=1000),
            short_sentences=env_int(env, "TRAINER_SHORT_SENTENCES", 2000, minimum=0),
            report_limit=env_int(env, "TRAINER_REPORT_LIMIT", 5000, minimum=0),
            tolerances=Tolerances(
                test=_env_float(env, "TRAINER_TOLERANCE_TEST", 0.005),
                short=_env_float(env, "TRAINER_TOLERANCE_SHORT", 0.01),
                feedback=_env_float(env, "TRAINER_TOLERANCE_FEEDBACK", 0.02),
                canary=_env_float(env, "TRAINER_TOLERANCE_CANARY", 0.02),
                canary_word=_env_float(env, "TRAINER_TOLERANCE_CANARY_WORD", 0.10),
            ),
        )


@dataclass
class Decision:
    published: bool
    version: str | None
    champion: str | None
    numbers: dict[str, Any]
    reasons: list[str]
    summary: str
    at: str
    feedback: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def eval_sets(
    config: TrainConfig,
    settings: Settings,
    tsettings: TrainerSettings,
    trained: list[feedback.Feedback],
    held: list[feedback.Feedback],
) -> list[EvalSet]:
    """The fixed test split, sentences of it, the held-out voters' votes, the canary of texts
    nobody voted about, and (for the record) the votes trained on."""
    data = ensure_aclimdb(config.data, settings.data_dir, config.download)
    test_path = config.test_data or (data if detect_format(data).startswith("aclimdb") else None)
    sets: list[EvalSet] = []
    pool_texts: list[str] = []
    pool_labels: list[np.ndarray] = []
    if test_path is not None:
        reviews = [
            r for r in read_reviews(test_path, split="test", labelled=True) if r.text.strip()
        ]
        if config.limit is not None and config.limit < len(reviews):
            keep = np.sort(
                np.random.default_rng(config.seed).choice(len(reviews), config.limit, False)
            )
            reviews = [reviews[i] for i in keep]
        texts = [r.text for r in reviews]
        labels = np.array([r.label for r in reviews], dtype=np.int64)
        sets.append(EvalSet("test", texts, labels, f"{test_path.name} (test split)"))
        pool_texts, pool_labels = list(texts), [labels]
        if tsettings.short_sentences:
            short, y_short = sentences_from(texts, labels, tsettings.short_sentences, seed=0)
            sets.append(EvalSet("short", short, y_short, "single sentences of the test split"))
            pool_texts += short
            pool_labels.append(y_short)
    if held:
        sets.append(
            EvalSet(
                "feedback",
                [v.text for v in held],
                label_ids([v.label for v in held]),
                f"votes of {len({v.user for v in held})} voters held out whole, one weight each",
                weights=votes.voter_weights(held),
            )
        )
    if trained and pool_texts:
        bird = votes.canary(
            trained, pool_texts, np.concatenate(pool_labels), [v.text for v in held]
        )
        if bird.texts:
            sets.append(
                EvalSet(
                    "canary",
                    bird.texts,
                    bird.labels,
                    f"texts nobody voted about sharing {len(bird.groups)} of the votes' words",
                    groups=bird.groups,
                )
            )
    if trained:
        sets.append(
            EvalSet(
                "learnt",
                [v.text for v in trained],
                label_ids([v.label for v in trained]),
                "the votes trained on (for the record: never decisive)",
                weights=votes.voter_weights(trained),
                informational=True,
            )
        )
    return sets


def run_cycle(
    conn: Redis,
    settings: Settings,
    tsettings: TrainerSettings,
    base: TrainConfig,
    lock: RedisLock | None = None,
) -> Decision:
    """One retraining cycle (the caller holds ``lock``); returns the decision."""
    from worker.model.served import load_served

    started = time.monotonic()
    kept = votes.training_set([f for _, f in feedback.entries(conn)], tsettings.max_per_user)
    train_votes, held = votes.split_by_voter(
        kept, tsettings.holdout_fraction, tsettings.min_holdout_voters
    )
    counts = {
        "votes": len(kept),
        "voters": len({v.user for v in kept}),
        "trained_on": len(train_votes),
        "held_out": len(held),
    }
    log.info("trainer_cycle_started", **counts)
    store = ModelStore(settings.model_dir, settings.model_name)
    if settings.model_store_url:  # the champion is what the shared store serves
        from shared.remote import RemoteStore, RemoteSync

        remote = RemoteStore(settings.model_store_url, settings.model_name)
        if remote.latest()[0] is not None:
            RemoteSync(remote, store).sync()
    scratch = Path(tempfile.mkdtemp(prefix="sentiment-trainer-"))
    try:
        config = dataclasses.replace(
            base,
            extra=tuple((v.text, feedback.LABELS.index(v.label)) for v in train_votes),
            extra_repeat=tsettings.repeat,
            publish=True,
            min_accuracy=None,
        )
        scratch_settings = dataclasses.replace(settings, model_dir=scratch, model_store_url="")
        train(config, scratch_settings)
        scratch_store = ModelStore(scratch, settings.model_name)
        champion_version = store.latest()
        champion_manifest = store.resolve(champion_version).manifest if champion_version else {}
        if champion_manifest.get("calibration"):  # the challenger answers like the champion
            from worker.training.calibrate import calibrate_version

            data = ensure_aclimdb(config.data, settings.data_dir, config.download)
            uncertain = float(champion_manifest["calibration"].get("uncertain_below", 0.6))
            calibrate_version(scratch_store, scratch_store.latest() or "", data, uncertain)
        challenger = load_served(scratch_store)
        champion = load_served(store) if champion_version else None
        sets = eval_sets(config, settings, tsettings, train_votes, held)
        numbers = compare(champion, challenger, sets)
        ok, reasons = decide(numbers, tsettings.tolerances)
        if ok and lock is not None and not lock.still_held():
            ok, reasons = (
                False,
                ["the trainer lock lapsed (another trainer may run): not published"],
            )
        at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        decision = Decision(False, None, champion_version, numbers, reasons, "", at, counts)
        if ok:
            published = _publish_copy(
                store, challenger.published, decision, _newest_remote(settings)
            )
            decision.published, decision.version = True, published.version
            if settings.model_store_url:
                from shared.remote import RemoteStore

                RemoteStore(settings.model_store_url, settings.model_name).upload(published)
            from worker.training import gate

            decision.summary = gate.summary(published.version, numbers, at[11:])
        else:
            decision.summary = f"challenger refused at {at[11:]}: {reasons[0]}"
        _announce(conn, decision)
        log.info(
            "trainer_published" if decision.published else "challenger_refused",
            version=decision.version,
            champion=champion_version,
            numbers=numbers,
            reasons=reasons,
            seconds=round(time.monotonic() - started, 1),
        )
        if decision.published and decision.version:
            _report(store, decision.version, champion_version, sets, tsettings)
        return decision
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _newest_remote(settings: Settings) -> str | None:
    """The newest version in the shared store this trainer publishes to (None: no remote)."""
    if not settings.model_store_url:
        return None
    from shared.remote import RemoteStore

    versions = RemoteStore(settings.model_store_url, settings.model_name).versions()
    return versions[-1] if versions else None


def _publish_copy(
    store: ModelStore, source: Any, decision: Decision, after: str | None = None
) -> Any:
    """Publish the scratch version into the real store, with the decision in its manifest,
    numbered after ``after`` too (the shared store's newest version)."""

    def write(folder: Path) -> dict[str, Any]:
        for file in source.path.iterdir():
            if file.is_file() and file.name != "manifest.json":
                shutil.copy(file, folder / file.name)
                (folder / file.name).chmod(0o644)
        skip = ("files", "version", "created", "format", "name")
        manifest = {k: v for k, v in source.manifest.items() if k not in skip}
        manifest["decision"] = {
            "champion": decision.champion,
            "numbers": decision.numbers,
            "feedback": decision.feedback,
            "at": decision.at,
        }
        return manifest

    return store.publish(write, after=after)


def _announce(conn: Redis, decision: Decision) -> None:
    try:
        announcements.announce_decision(conn, decision.to_json())
    except RedisError as exc:  # the decision is in the log and the manifest anyway
        log.warning("decision_not_announced", reason=str(exc))


def _report(
    store: ModelStore,
    version: str,
    champion: str | None,
    sets: list[EvalSet],
    tsettings: TrainerSettings,
) -> None:
    """The published version's analysis report, compared with the champion (best effort)."""
    from shared.datasets import Review
    from worker.training.analysis.report import analyze

    test = next((s for s in sets if s.name == "test"), None)
    if test is None or len(test) < 10 or not tsettings.report_limit:
        return
    n = min(len(test), tsettings.report_limit)
    reviews = [
        Review(id=str(i), text=test.texts[i], label=int(test.labels[i]), line=i + 1)
        for i in range(n)
    ]
    try:
        out, _ = analyze(store, version, reviews, None, champion, data_name=test.note)
        log.info("trainer_report_written", version=version, path=str(out / "report.html"))
    except Exception as exc:  # the version is published; a failed report is logged
        log.exception("trainer_report_failed", version=version, reason=repr(exc))


def due(conn: Redis, tsettings: TrainerSettings, now: float) -> tuple[bool, str]:
    """Whether a cycle should run now: enough new votes, or the interval elapsed."""
    state: Any = conn.hgetall(STATE_KEY)
    last = float(state.get(b"last_run_at", 0) or 0)
    new_votes = feedback.count_since(conn, last) if last else sum(1 for _ in feedback.entries(conn))
    if new_votes >= tsettings.min_feedback:
        return True, f"{new_votes} new votes"
    if tsettings.interval_s and now - last >= tsettings.interval_s:
        return True, "schedule"
    return False, ""


def mark_run(conn: Redis, at: float, failed: str = "") -> None:
    """Record a cycle (``failed``: why it failed, or empty); ``due`` counts new votes from it."""
    conn.hset(STATE_KEY, mapping={"last_run_at": at, "last_failure": failed[:500]})
