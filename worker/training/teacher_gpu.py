"""A GPU teacher for the CPU recipe (PyTorch and NumPy only): one pack in, soft labels out.

    python worker/training/teacher_gpu.py --pack teacher-pack.npz --out soft-labels.npz
    python worker/training/teacher_gpu.py --pack tiny.npz --out tiny-soft.npz --tiny   # CPU check

The recipe is Miyato, Dai & Goodfellow (ICLR 2017, "Adversarial training methods for
semi-supervised text classification", 94.1% on IMDB at paper scale), fitted to a time budget:

1. **Language-model pretraining** of an embedding (frequency-normalised, as in the paper) and a
   one-layer LSTM on the fitting and unlabelled reviews (never the holdout's or test's text),
   with an adaptive softmax over the vocabulary.
2. **Classification** from the pretrained weights: the LSTM's last state and its max over time,
   a hidden layer, one logit; cross-entropy on the labelled fitting reviews plus **adversarial
   training** (a perturbation of the embeddings of norm ``eps`` along the loss gradient) and
   **virtual adversarial training** on fitting + unlabelled reviews (the direction, found by one
   power iteration, that most changes the prediction; Miyato et al. 2017/2018).
3. The epoch with the best accuracy on the holdout (``sentiment-train``'s validation split, which
   the teacher never trains on) writes the positive-class probability of every fitting, holdout
   and unlabelled review, with the teacher's accuracy on the holdout and the test reviews (these
   are reported only; nothing is chosen on them).

Each phase gets a share of ``--budget-s`` and stops when it is spent (a phase always completes at
least one step), so the script fits a lent GPU's time; predicting every review comes after it.
``--tiny`` does a fixed amount of work instead (no deadline), the same on any machine.
Progress is one JSON line per group of steps.
It imports nothing of this project: the GPU machine has no TensorFlow and none of our packages.
Pack and soft-label formats: ``worker/training/teacher.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACK_FORMAT = "review-sentiment teacher pack 1"
SOFT_FORMAT = "review-sentiment soft labels 1"
FIT, HOLDOUT, UNSUP, TEST = 0, 1, 2, 3


@dataclass
class Config:
    embed_dim: int = 256
    hidden: int = 1024
    dense: int = 30
    dropout: float = 0.5
    bptt: int = 100
    lm_batch: int = 128
    lm_lr: float = 1e-3
    clf_batch: int = 64
    clf_len: int = 400
    clf_lr: float = 5e-4
    eps: float = 5.0
    #: VAT's finite-difference step (Miyato et al.'s code: 0.1; 1e-6 vanishes in float32).
    xi: float = 0.1
    adv_weight: float = 1.0
    vat_weight: float = 1.0
    budget_s: float = 480.0
    lm_share: float = 0.35
    clf_share: float = 0.55
    #: Fixed amounts of work instead of the budget (no deadline): the same run on any machine.
    lm_steps: int | None = None
    clf_epochs: int | None = None
    seed: int = 1

    @classmethod
    def tiny(cls) -> Config:
        """A CPU check of every step in seconds (the test's setting): fixed work, not time."""
        return cls(
            embed_dim=16, hidden=16, dense=8, dropout=0.1, bptt=20, lm_batch=8, lm_lr=5e-3,
            clf_batch=8, clf_len=64, clf_lr=5e-3, budget_s=600.0, lm_steps=60, clf_epochs=25,
        )  # fmt: skip


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


@dataclass
class Pack:
    rows: list[np.ndarray]
    role: np.ndarray  # FIT, HOLDOUT, UNSUP, TEST
    label: np.ndarray  # -1: unknown
    key: np.ndarray
    counts: np.ndarray
    meta: dict[str, Any]
    sha256: str


def read_pack(path: Path) -> Pack:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != PACK_FORMAT:
            raise SystemExit(f"{path}: format {meta.get('format')!r}, expected {PACK_FORMAT!r}")
        ids, offsets = z["ids"].astype(np.int64), z["offsets"]
        rows = [ids[a:b] for a, b in itertools.pairwise(offsets)]
        return Pack(rows, z["role"], z["label"], z["key"], z["counts"], meta, digest)


def build(torch: Any, vocab: int, counts: np.ndarray, cfg: Config) -> Any:
    nn, F = torch.nn, torch.nn.functional

    class Teacher(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, cfg.embed_dim, padding_idx=0)
            freq = torch.tensor(counts, dtype=torch.float32)
            self.register_buffer("freq", (freq / freq.sum().clamp(min=1)).unsqueeze(1))
            self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, batch_first=True)
            self.drop = nn.Dropout(cfg.dropout)
            cut = [c for c in (2_000, 10_000, 30_000) if c < vocab - 1] or [max(1, vocab // 2)]
            self.lm_head = nn.AdaptiveLogSoftmaxWithLoss(cfg.hidden, vocab, cut, div_value=4.0)
            self.hidden = nn.Linear(2 * cfg.hidden, cfg.dense)
            self.out = nn.Linear(cfg.dense, 1)

        def table(self) -> Any:
            """Embeddings normalised by the frequency-weighted mean and variance (Miyato et al.)."""
            w = self.embed.weight
            mean = (self.freq * w).sum(0, keepdim=True)
            var = (self.freq * (w - mean) ** 2).sum(0, keepdim=True)
            return (w - mean) / torch.sqrt(var + 1e-6)

        def embed_ids(self, ids: Any) -> Any:
            return F.embedding(ids, self.table(), padding_idx=0)

        def lm_loss(self, x: Any, y: Any, state: Any) -> tuple[Any, Any]:
            out, state = self.lstm(self.drop(self.embed_ids(x)), state)
            h = self.drop(out).reshape(-1, out.shape[-1])
            keep = y.reshape(-1) != 0
            return self.lm_head(h[keep], y.reshape(-1)[keep]).loss, state

        def classify(self, e: Any, lengths: Any, dropout: bool = True) -> Any:
            """One logit per review from its embeddings ``e``; ``dropout`` off: the same function
            on every call (VAT compares two passes: different masks would be all it measured)."""

            def drop(t: Any) -> Any:
                return F.dropout(t, cfg.dropout, training=self.training and dropout)

            packed = nn.utils.rnn.pack_padded_sequence(
                drop(e), lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, (h, _) = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=e.shape[1]
            )
            pad = torch.arange(e.shape[1], device=e.device)[None, :] >= lengths[:, None]
            pooled = out.masked_fill(pad[:, :, None], -1e4).max(1).values
            z = torch.cat([h[-1], pooled], dim=1)
            return self.out(drop(F.relu(self.hidden(drop(z))))).squeeze(1)

    return Teacher()


def clipped(row: np.ndarray, n: int) -> np.ndarray:
    """Head and tail of a row, at most ``n`` ids (a quarter from the start, as served)."""
    head = n // 4
    return row if len(row) <= n else np.concatenate([row[:head], row[len(row) - n + head :]])


def batches(rows: list[np.ndarray], idx: np.ndarray, size: int, rng: Any, shuffle: bool) -> list:
    """Index batches of similar lengths (sorted within chunks of 50 batches), order shuffled."""
    if shuffle:
        idx = rng.permutation(idx)
    chunk = size * 50
    out = []
    for s in range(0, len(idx), chunk):
        part = idx[s : s + chunk]
        part = part[np.argsort([len(rows[i]) for i in part], kind="stable")]
        out += [part[k : k + size] for k in range(0, len(part), size)]
    if shuffle:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def to_tensor(torch: Any, rows: list[np.ndarray], idx: np.ndarray, device: Any) -> tuple[Any, Any]:
    lengths = np.array([max(1, len(rows[i])) for i in idx])
    x = np.zeros((len(idx), lengths.max()), dtype=np.int64)
    for k, i in enumerate(idx):
        x[k, : len(rows[i])] = rows[i]
    return torch.from_numpy(x).to(device), torch.from_numpy(lengths).to(device)


def unit(torch: Any, d: Any, lengths: Any) -> Any:
    """``d`` zeroed on padding and scaled to unit L2 norm per review."""
    mask = torch.arange(d.shape[1], device=d.device)[None, :] < lengths[:, None]
    d = d * mask[:, :, None]
    norm = d.flatten(1).norm(dim=1).clamp(min=1e-12)
    return d / norm[:, None, None]


def pretrain(torch: Any, model: Any, pack: Pack, cfg: Config, device: Any, deadline: float) -> dict:
    """Language-model steps on the fitting + unlabelled reviews until ``deadline``."""
    keep = np.flatnonzero((pack.role == FIT) | (pack.role == UNSUP))
    rng = np.random.default_rng(cfg.seed)
    stream = np.concatenate([np.append(pack.rows[i], 0) for i in rng.permutation(keep)])
    n = len(stream) // cfg.lm_batch
    data = torch.from_numpy(stream[: n * cfg.lm_batch].reshape(cfg.lm_batch, n)).to(device)
    params = [p for name, p in model.named_parameters() if not name.startswith(("hidden", "out"))]
    opt = torch.optim.Adam(params, lr=cfg.lm_lr)
    model.train()
    steps, losses, state, pos = 0, [], None, 0
    while steps == 0 or (time.monotonic() < deadline and steps < (cfg.lm_steps or 1 << 62)):
        if pos + cfg.bptt + 1 > n:
            pos, state = 0, None
        x, y = data[:, pos : pos + cfg.bptt], data[:, pos + 1 : pos + cfg.bptt + 1]
        pos += cfg.bptt
        loss, state = model.lm_loss(x, y, state)
        state = tuple(s.detach() for s in state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        steps += 1
        losses.append(loss.detach())  # no device sync per step
        if steps % 200 == 0:
            recent = float(torch.stack(losses[-200:]).mean())
            log("lm", steps=steps, tokens=steps * cfg.bptt * cfg.lm_batch, loss=recent)
    recent = float(torch.stack(losses[-200:]).mean())
    return {"steps": steps, "tokens": steps * cfg.bptt * cfg.lm_batch, "loss": recent}


def predict(
    torch: Any, model: Any, rows: list[np.ndarray], idx: np.ndarray, cfg: Config, device: Any
) -> np.ndarray:
    model.eval()
    probs = np.zeros(len(rows), dtype=np.float64)
    with torch.no_grad():
        for b in batches(rows, idx, cfg.clf_batch * 4, None, shuffle=False):
            x, lengths = to_tensor(torch, rows, b, device)
            probs[b] = torch.sigmoid(model.classify(model.embed_ids(x), lengths)).cpu().numpy()
    model.train()
    return probs[idx]


def kl(torch: Any, p_logit: Any, q_logit: Any) -> Any:
    """KL(p || q) of two Bernoulli distributions given by their logits, batch mean."""
    F = torch.nn.functional
    p = torch.sigmoid(p_logit)
    return (
        p * (F.logsigmoid(p_logit) - F.logsigmoid(q_logit))
        + (1 - p) * (F.logsigmoid(-p_logit) - F.logsigmoid(-q_logit))
    ).mean()


def adversarial(torch: Any, loss: Any, e: Any, lengths: Any, eps: float) -> Any:
    """The perturbation of ``e`` of norm ``eps`` that most increases ``loss`` to first order."""
    g = torch.autograd.grad(loss, e, retain_graph=True)[0]
    return eps * unit(torch, g.detach(), lengths)


def vat_perturbation(torch: Any, model: Any, e: Any, lens: Any, cfg: Config, d: Any = None) -> Any:
    """VAT (Miyato et al. 2018), dropout off: the prediction on ``e`` and the perturbation of norm
    ``eps`` that changes it most, by one power iteration from the direction ``d`` (random)."""
    with torch.no_grad():
        p = model.classify(e, lens, dropout=False)
    d = (cfg.xi * unit(torch, torch.randn_like(e) if d is None else d, lens)).requires_grad_()
    g = torch.autograd.grad(kl(torch, p, model.classify(e.detach() + d, lens, dropout=False)), d)[0]
    return p, cfg.eps * unit(torch, g.detach(), lens)


def train_classifier(
    torch: Any,
    model: Any,
    pack: Pack,
    rows: list[np.ndarray],
    cfg: Config,
    device: Any,
    deadline: float,
) -> dict:
    """Epochs of cross-entropy + adversarial + virtual adversarial training until ``deadline``."""
    F = torch.nn.functional
    rng = np.random.default_rng(cfg.seed + 1)
    fit = np.flatnonzero(pack.role == FIT)
    holdout = np.flatnonzero(pack.role == HOLDOUT)
    pool = np.flatnonzero((pack.role == FIT) | (pack.role == UNSUP))
    y_all = torch.from_numpy(pack.label.astype(np.float32)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.clf_lr)
    best: dict[str, Any] = {"accuracy": -1.0}
    epochs: list[dict[str, Any]] = []
    while not epochs or (time.monotonic() < deadline and len(epochs) < (cfg.clf_epochs or 1 << 62)):
        started, losses = time.monotonic(), []
        for b in batches(rows, fit, cfg.clf_batch, rng, shuffle=True):
            x, lengths = to_tensor(torch, rows, b, device)
            e = model.embed_ids(x)
            loss = F.binary_cross_entropy_with_logits(model.classify(e, lengths), y_all[b])
            total = loss
            if cfg.adv_weight:
                r = adversarial(torch, loss, e, lengths, cfg.eps)
                adv = F.binary_cross_entropy_with_logits(model.classify(e + r, lengths), y_all[b])
                total = total + cfg.adv_weight * adv
            if cfg.vat_weight:
                u = rng.choice(pool, size=len(b), replace=False)
                xu, lu = to_tensor(torch, rows, u, device)
                eu = model.embed_ids(xu)
                p, r = vat_perturbation(torch, model, eu, lu, cfg)
                total = total + cfg.vat_weight * kl(torch, p, model.classify(eu + r, lu, False))
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.detach())
            if time.monotonic() >= deadline:  # at least one step was taken
                break
        p_hold = predict(torch, model, rows, holdout, cfg, device)
        acc = float(((p_hold > 0.5) == pack.label[holdout]).mean()) if len(holdout) else 0.0
        loss_mean = float(torch.stack(losses).mean())
        entry = {"epoch": len(epochs) + 1, "loss": loss_mean, "holdout": acc,
                 "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
        epochs.append(entry)
        log("epoch", **entry)
        if acc > best["accuracy"]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best = {"accuracy": acc, "epoch": entry["epoch"], "state": state}
    model.load_state_dict(best["state"])
    return {"epochs": epochs, "best_epoch": best["epoch"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, required=True, help="from sentiment-teacher-pack")
    p.add_argument("--out", type=Path, required=True, help="soft labels to write (.npz)")
    p.add_argument("--budget-s", type=float, help="seconds for training in all (default 480)")
    p.add_argument("--tiny", action="store_true", help="tiny network and budget: a CPU check")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    args = p.parse_args(argv)
    import torch

    cfg = Config.tiny() if args.tiny else Config()
    cfg.seed = args.seed
    if args.budget_s is not None:
        cfg.budget_s = args.budget_s
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    started = time.monotonic()
    pack = read_pack(args.pack)
    vocab = int(pack.meta["vocab_size"])
    log("pack", sha256=pack.sha256[:16], reviews=pack.meta["reviews"], device=str(device))
    model = build(torch, vocab, pack.counts, cfg).to(device)
    fixed = cfg.lm_steps is not None and cfg.clf_epochs is not None  # work, not time
    lm_deadline = math.inf if fixed else started + cfg.budget_s * cfg.lm_share
    lm = pretrain(torch, model, pack, cfg, device, lm_deadline)
    rows = [clipped(r, cfg.clf_len) for r in pack.rows]
    deadline = math.inf if fixed else started + cfg.budget_s * (cfg.lm_share + cfg.clf_share)
    clf = train_classifier(torch, model, pack, rows, cfg, device, deadline)
    labelled = np.flatnonzero(pack.role != TEST)
    probs = predict(torch, model, rows, labelled, cfg, device)
    accuracy = {}
    for role, name in ((HOLDOUT, "holdout"), (TEST, "test")):
        idx = np.flatnonzero(pack.role == role)
        if len(idx):
            p_role = predict(torch, model, rows, idx, cfg, device)
            accuracy[name] = float(((p_role > 0.5) == pack.label[idx]).mean())
    seconds = round(time.monotonic() - started, 1)
    meta = {
        "format": SOFT_FORMAT,
        "preprocessing": pack.meta["preprocessing"],
        "pack_sha256": pack.sha256,
        "pack": {k: pack.meta[k] for k in ("vocab_fingerprint", "seed", "reviews", "sources")},
        "teacher": {
            "model": "LSTM LM-pretrained + adversarial + virtual adversarial (Miyato et al. 2017)",
            "config": asdict(cfg),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "seconds": seconds,
            "lm": lm,
            "classifier": clf,
            "accuracy": accuracy,
            "note": "fit reviews: in-sample; holdout: out-of-sample; test: reported, never used",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as f:
        np.savez_compressed(
            f,
            key=pack.key[labelled],
            prob=probs.astype(np.float16),
            role=pack.role[labelled],
            meta=np.array(json.dumps(meta)),
        )
    log("done", out=str(args.out), seconds=seconds, accuracy=accuracy, reviews=len(labelled))
    return 0 if all(math.isfinite(v) for v in accuracy.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
