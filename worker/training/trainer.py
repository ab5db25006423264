"""The long-running trainer: retrains on IMDB plus user feedback and publishes only what is better.

One cycle (``run_cycle``):

1. read the votes that count (a user's latest per message), keep at most ``max_per_user`` per
   user, hold the newest ``holdout_fraction`` out by time when that is at least ``min_holdout``;
2. train a challenger on the training data plus the remaining votes (each ``repeat`` times),
   published into a private scratch store (nothing visible to workers);
3. score challenger and the serving champion on the same sets (``worker.training.gate``): the
   fixed test split, single sentences of it, and the held-out (or, early on, the trained-on)
   feedback;
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
import threading
import time
import uuid
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
from shared.config import ConfigError, Settings, env_int
from shared.datasets import detect_format, ensure_aclimdb, read_reviews
from shared.store import ModelStore
from worker.training.gate import EvalSet, Tolerances, compare, decide, label_ids, sentences_from
from worker.training.train import TrainConfig, train

log = structlog.get_logger(__name__)

LOCK_KEY = "sentiment:trainer:lock"
STATE_KEY = "sentiment:trainer:state"
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_REFRESH = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not 0 <= value <= 1:
        raise ConfigError(f"{name} must be between 0 and 1, got {value}")
    return value


@dataclass(frozen=True)
class TrainerSettings:
    """When to retrain and what a challenger must show (``TRAINER_*``, ``FEEDBACK_*``)."""

    min_feedback: int = 20
    interval_s: int = 0
    check_every_s: int = 30
    lock_ttl_s: int = 300
    holdout_fraction: float = 0.2
    min_holdout: int = 20
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
            min_holdout=env_int(env, "TRAINER_MIN_HOLDOUT", 20),
            max_per_user=env_int(env, "FEEDBACK_MAX_PER_USER", feedback.DEFAULT_MAX_PER_USER, 1),
            repeat=env_int(env, "TRAINER_FEEDBACK_REPEAT", 5, minimum=1, maximum=1000),
            short_sentences=env_int(env, "TRAINER_SHORT_SENTENCES", 2000, minimum=0),
            report_limit=env_int(env, "TRAINER_REPORT_LIMIT", 5000, minimum=0),
            tolerances=Tolerances(
                test=_env_float(env, "TRAINER_TOLERANCE_TEST", 0.005),
                short=_env_float(env, "TRAINER_TOLERANCE_SHORT", 0.01),
                feedback=_env_float(env, "TRAINER_TOLERANCE_FEEDBACK", 0.02),
            ),
        )


class LockHeld(RuntimeError):
    """Another trainer holds the lock."""


class RedisLock:
    """A lock with an expiry, refreshed by a thread while held; released only by its owner.

    A killed holder stops refreshing and the lock lapses after ``ttl`` seconds.  ``lost`` is set
    when a refresh finds the lock gone or taken (then the holder must not publish)."""

    def __init__(self, conn: Redis, ttl_s: int, key: str = LOCK_KEY) -> None:
        self.conn, self.ttl_ms, self.key = conn, ttl_s * 1000, key
        self.token = uuid.uuid4().hex
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        deadline = time.monotonic() + wait_s
        while not self.conn.set(self.key, self.token, nx=True, px=self.ttl_ms):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(1.0, max(0.05, self.ttl_ms / 3000)))
        self._thread = threading.Thread(target=self._refresh, name="trainer-lock", daemon=True)
        self._thread.start()
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.conn.eval(_REFRESH, 1, self.key, self.token, self.ttl_ms):
                    self.lost.set()
                    log.error("trainer_lock_lost", key=self.key)
                    return
            except RedisError as exc:  # Redis away: the lock may lapse; checked before publish
                log.warning("trainer_lock_refresh_failed", reason=str(exc))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.conn.eval(_RELEASE, 1, self.key, self.token)
        except RedisError as exc:  # it lapses by itself
            log.warning("trainer_lock_release_failed", reason=str(exc))

    def still_held(self) -> bool:
        try:
            return not self.lost.is_set() and self.conn.get(self.key) == self.token.encode()
        except RedisError:
            return False


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
    votes: list[feedback.Feedback],
    votes_note: str,
) -> list[EvalSet]:
    """The fixed test split, sentences of it, and the feedback set."""
    data = ensure_aclimdb(config.data, settings.data_dir, config.download)
    test_path = config.test_data or (data if detect_format(data).startswith("aclimdb") else None)
    sets: list[EvalSet] = []
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
        if tsettings.short_sentences:
            short, y_short = sentences_from(texts, labels, tsettings.short_sentences, seed=0)
            sets.append(EvalSet("short", short, y_short, "single sentences of the test split"))
    sets.append(
        EvalSet(
            "feedback", [v.text for v in votes], label_ids([v.label for v in votes]), votes_note
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
    votes = feedback.training_set([f for _, f in feedback.entries(conn)], tsettings.max_per_user)
    train_votes, held = feedback.split_by_time(
        votes, tsettings.holdout_fraction, tsettings.min_holdout
    )
    counts = {"votes": len(votes), "trained_on": len(train_votes), "held_out": len(held)}
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
        note = "newest votes, held out by time" if held else "the votes trained on (no holdout yet)"
        sets = eval_sets(config, settings, tsettings, held or train_votes, note)
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
            published = _publish_copy(store, challenger.published, decision)
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


def _publish_copy(store: ModelStore, source: Any, decision: Decision) -> Any:
    """Publish the scratch version into the real store, with the decision in its manifest."""

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

    return store.publish(write)


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


def mark_run(conn: Redis, at: float) -> None:
    conn.hset(STATE_KEY, mapping={"last_run_at": at})
