"""Bot latency under load: fake Bot API + real redis-server + 2 workers + the real bot process.

    python bench/bot_latency.py [--rate 20] [--users 50] [--seconds 30]

Pushes ``rate`` updates per second from ``users`` simulated users (IMDB test reviews, cut to
Telegram's 4,096 characters) for ``seconds``; measures, per update, the time from the moment the
fake server hands it to the bot in a getUpdates answer to the moment it receives the final
editMessageText, and counts updates that never got an answer.  Targets (issue 4): p50 <= 100 ms,
p99 <= 300 ms, 0 lost updates.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.fake_telegram import TOKEN, FakeTelegramServer
from bench.infra import model_arguments
from shared.config import Settings
from shared.datasets import read_reviews
from shared.local import RedisServer, start, stop_processes, worker_env, workers


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(parser, settings)
    parser.add_argument("--rate", type=float, default=20.0, help="updates per second")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    texts = [r.text[:4096] for r in read_reviews(args.data, split="test")]
    random.Random(0).shuffle(texts)
    n = int(args.rate * args.seconds)
    tmp = Path(tempfile.mkdtemp(prefix="bench-bot-"))
    with RedisServer.temporary() as redis:
        env = worker_env(
            redis.url,
            1,
            model_dir=args.model_dir,
            model_name=args.model_name,
            TELEGRAM_BOT_TOKEN=TOKEN,
            BOT_RATE_PER_MINUTE="1000",
            NO_PROXY="127.0.0.1,localhost",
            LOG_LEVEL="INFO",
        )
        with workers(env, args.workers), FakeTelegramServer() as fake:
            log = tmp / "bot.log"
            bot = start("bot", [], {**env, "TELEGRAM_API_URL": fake.url}, log)
            try:
                fake.wait_for(lambda: fake.calls_to("deleteWebhook"), timeout=60)
                sent: dict[int, int] = {}  # update id -> message id
                began = time.monotonic()
                for i in range(n):
                    due = began + i / args.rate
                    time.sleep(max(0.0, due - time.monotonic()))
                    user = 1000 + i % args.users
                    message = fake.message(user, texts[i % len(texts)])
                    sent[fake.push("message", message)] = message["message_id"]
                push_s = time.monotonic() - began
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if all(_final_edit(fake, m) for m in sent.values()):
                        break
                    time.sleep(0.2)
            finally:
                stop_processes([bot], timeout=15)
    latencies, lost = [], 0
    for update_id, message_id in sent.items():
        edit = _final_edit(fake, message_id)
        if edit is None or update_id not in fake.served_at:
            lost += 1
        else:
            latencies.append(1000 * (edit - fake.served_at[update_id]))
    ms = np.array(latencies)
    print(
        f"\n{n} updates from {args.users} users at {n / push_s:.1f}/s for {push_s:.0f} s; "
        f"{args.workers} workers, model {args.model_name}/{args.version}"
    )
    print(f"{'metric':<34} {'measured':>10} {'target':>8}")
    print(f"{'p50 served -> final edit (ms)':<34} {np.percentile(ms, 50):>10.1f} {'<= 100':>8}")
    print(f"{'p90 (ms)':<34} {np.percentile(ms, 90):>10.1f} {'':>8}")
    print(f"{'p99 (ms)':<34} {np.percentile(ms, 99):>10.1f} {'<= 300':>8}")
    print(f"{'max (ms)':<34} {ms.max():>10.1f} {'':>8}")
    print(f"{'lost updates':<34} {lost:>10d} {'0':>8}")
    return 0 if lost == 0 else 1


def _final_edit(fake: object, message_id: int) -> float | None:
    """When the bot's reply to ``message_id`` got its last edit (the answer), if it did."""
    for reply in fake.replies_to(message_id):  # type: ignore[attr-defined]
        if reply["edits"]:
            return float(reply["edits"][-1][0])
    return None


if __name__ == "__main__":
    sys.exit(main())
