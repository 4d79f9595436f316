"""Score a folder of images with one or more rewards, in-process or through the reward services.

Usage::

    python -m services.eval --rewards pickscore,ocr --images DIR [--prompts FILE]
        [--url http://127.0.0.1:8000 | --grpc 127.0.0.1:9000]
        [--params pickscore.variant=pretrained ...] [--out results.csv] [--batch-size 16]
        [--allow-random]

Images: every ``.png``, ``.jpg`` and ``.jpeg`` file directly in DIR, sorted by file name, decoded
by the services' own decoder (``services/images.py``). A file that does not decode gets an
error in every reward's error column, not a score.

Prompts (``--prompts``, required when a reward reads prompts):

- a ``.jsonl`` file: one JSON object per line with at least ``"file"`` and ``"prompt"``; entries
  are matched to images by file name (only the last path component of ``"file"`` counts).
  Every image needs an entry; entries without an image are reported and ignored.
- any other file: plain text, one prompt per line, in the sorted image order; the number of
  lines must equal the number of images (trailing blank lines aside), and no line may be blank.

Without ``--url``/``--grpc`` each reward is built and loaded in this process (the ``tiny``
variant unless ``--params reward.variant=pretrained ...`` says otherwise). With them,
:class:`services.client.RewardClient` calls a running Serve app (``--params`` then does not
apply: the server's config decides); a bearer token is read from ``$APEX_REWARD_TOKEN``.

What scored: every reward's model (``model_info``, or the ``model`` field of the server's
answers) is printed under the summary. The ``tiny`` variants of the model-based rewards have
random weights, so their scores mean nothing: they are refused (exit 2, before any model is
loaded, or after the server's first answer) unless ``--allow-random`` is given.

Output: a CSV with ``file``, ``prompt``, one score column per reward (empty = unscored) and one
``<reward>_error`` column per reward, and a summary table on stdout. Bad arguments (missing
folder, no images, unknown reward, prompts that do not match, random weights not allowed) exit
2 with the reason.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from services.client import RewardClient, ScoreMatrix
from services.errors import InvalidInput
from services.eval_inputs import EvalError, list_images, load_prompts, parse_params
from services.images import decode_bytes
from services.rewards.base import is_random_model

TOKEN_ENV = "APEX_REWARD_TOKEN"
_REQUEST_ERRORS = ("unknown_reward", "invalid_input", "payload_too_large", "unauthenticated")


class ScoringError(Exception):
    """A reward failed as a whole on the first batch for another reason (exit code 1)."""


# ---------------------------------------------------------------------------- scorers


def refuse_random(models: dict[str, str | None], allow: bool, remote: bool) -> None:
    """Stop (``EvalError``) when a reward scores with random weights and ``allow`` is off."""
    random = [name for name, model in models.items() if is_random_model(model)]
    if not random or allow:
        return
    listed = "; ".join(f"{name}: {models[name]}" for name in random)
    if remote:
        fix = "serve them with real weights (the server's config decides)"
    else:
        params = " ".join(f"{name}.variant=pretrained" for name in random)
        fix = f"load real weights with --params {params}"
    raise EvalError(
        f"random weights would score {', '.join(random)}, so the scores would mean nothing "
        f"({listed}); {fix}, or pass --allow-random to score with them anyway (tests, smoke runs)"
    )


class LocalScorer:
    """Every reward built and loaded in this process; returns the client's ``ScoreMatrix``."""

    def __init__(self, rewards: Sequence[str], params: dict[str, dict], allow_random: bool):
        from services.rewards.base import build_reward

        self.rewards = list(rewards)
        self.models = {}
        for name in self.rewards:
            try:
                self.models[name] = build_reward(name, params.get(name))
            except (KeyError, ValueError) as exc:
                raise EvalError(exc.args[0] if exc.args else str(exc)) from None
        self.descriptions = {n: m.model_info().description for n, m in self.models.items()}
        refuse_random(self.descriptions, allow_random, remote=False)
        for model in self.models.values():
            model.load()

    def submit(self, images: list[np.ndarray], prompts: list[str] | None) -> Future:
        """Score synchronously; a finished future, so callers treat both scorers alike."""
        scores = np.full((len(self.rewards), len(images)), np.nan)
        matrix = ScoreMatrix(rewards=self.rewards, scores=scores, models=dict(self.descriptions))
        prompts = prompts or [None] * len(images)
        for k, name in enumerate(self.rewards):
            try:
                values = self.models[name].score(images, prompts)
            except Exception as exc:  # one reward failing must not stop the others
                matrix.failures[name] = f"{type(exc).__name__}: {exc}"
                continue
            errors: list[str | None] = []
            for i, value in enumerate(values):
                ok = value is not None and np.isfinite(value)
                scores[k, i] = value if ok else np.nan
                if ok:
                    errors.append(None)
                elif value is None:
                    errors.append(self.models[name].unscored_reason(prompts[i]))
                else:
                    errors.append(f"the reward returned a non-finite score ({value})")
            matrix.errors[name] = errors
        future: Future = Future()
        future.set_result(matrix)
        return future

    def close(self) -> None:
        """Nothing to release."""


class RemoteScorer:
    """The rewards of a running Serve app, over HTTP or gRPC; the server decides the models."""

    def __init__(self, rewards: Sequence[str], url: str | None, grpc_target: str | None):
        token = os.environ.get(TOKEN_ENV) or None
        if url:
            self.client = RewardClient.over_http(url, token=token)
        else:
            self.client = RewardClient.over_grpc(grpc_target, token=token)
        self.rewards = list(rewards)
        self.descriptions: dict[str, str | None] = {}  # known from the answers only

    def submit(self, images: list[np.ndarray], prompts: list[str] | None) -> Future:
        """Start scoring one batch with every reward."""
        return self.client.submit(images, prompts, self.rewards)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


# ---------------------------------------------------------------------------- evaluation


def evaluate(
    scorer,
    files: Sequence[Path],
    prompts: list[str] | None,
    batch_size: int,
    allow_random: bool = False,
) -> dict:
    """Score every file in batches (two in flight); returns scores [K, N], errors [K][N] and
    the model of each reward (refused after the first answer if random and not allowed)."""
    from tqdm import tqdm

    rewards = scorer.rewards
    scores = np.full((len(rewards), len(files)), np.nan)
    errors: list[list[str | None]] = [[None] * len(files) for _ in rewards]
    models: dict[str, str | None] = {r: scorer.descriptions.get(r) for r in rewards}
    pending: deque[tuple[list[int], Future]] = deque()
    starts = range(0, len(files), batch_size)
    merged = 0
    with tqdm(total=len(files), unit="img", desc="scoring", disable=None) as bar:
        for batch_no, start in enumerate(starts):
            index = list(range(start, min(start + batch_size, len(files))))
            arrays, kept = [], []
            for i in index:
                try:
                    arrays.append(decode_bytes(files[i].read_bytes(), i))
                    kept.append(i)
                except InvalidInput as exc:
                    reason = exc.message.removeprefix(f"image {i}: ")
                    for k in range(len(rewards)):
                        errors[k][i] = f"{files[i].name}: {reason}"
            if arrays:
                batch_prompts = [prompts[i] for i in kept] if prompts else None
                pending.append((kept, scorer.submit(arrays, batch_prompts)))
            else:
                bar.update(len(index))
            while pending and (len(pending) > 1 or batch_no == len(starts) - 1):
                kept_done, future = pending.popleft()
                matrix = future.result()
                models.update({r: m for r, m in matrix.models.items() if m})
                if merged == 0:
                    refuse_random(matrix.models, allow_random, remote=True)
                _merge(matrix, kept_done, scores, errors, first=merged == 0)
                merged += 1
                bar.update(len(kept_done))
    return {"rewards": rewards, "scores": scores, "errors": errors, "models": models}


def _merge(matrix: ScoreMatrix, kept: list[int], scores, errors, first: bool) -> None:
    """Copy one batch's matrix into the full arrays.

    A reward failing as a whole on the first batch stops the run (a wrong name, missing
    prompts, no server: every later batch would fail too); later, it marks the batch unscored.
    """
    for k, reward in enumerate(matrix.rewards):
        failure = matrix.failures.get(reward)
        if failure is not None:
            if first and failure.startswith(_REQUEST_ERRORS):
                raise EvalError(f"reward {reward!r}: {failure}")
            if first:
                raise ScoringError(f"reward {reward!r} failed on the first batch: {failure}")
            for i in kept:
                errors[k][i] = failure
            continue
        for j, i in enumerate(kept):
            scores[k, i] = matrix.scores[k, j]
            errors[k][i] = matrix.errors.get(reward, [None] * len(kept))[j]


def write_csv(path: Path, files: Sequence[Path], prompts: list[str] | None, result: dict) -> None:
    """One row per image: file, prompt, the scores (empty = unscored), the errors."""
    rewards, scores, errors = result["rewards"], result["scores"], result["errors"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "prompt", *rewards, *(f"{r}_error" for r in rewards)])
        for i, file in enumerate(files):
            values = [
                "" if np.isnan(scores[k, i]) else repr(float(scores[k, i]))
                for k in range(len(rewards))
            ]
            errs = [errors[k][i] or "" for k in range(len(rewards))]
            writer.writerow([file.name, prompts[i] if prompts else "", *values, *errs])


def summary_table(result: dict) -> str:
    """Per reward: scored, unscored, mean, sample std, min, max; then the commonest error."""
    header = f"{'reward':<24}{'scored':>8}{'unscored':>10}{'mean':>11}{'std':>11}"
    header += f"{'min':>11}{'max':>11}"
    lines, notes = [header, "-" * len(header)], []
    for k, reward in enumerate(result["rewards"]):
        row = result["scores"][k]
        ok = row[~np.isnan(row)]
        stats = [ok.mean(), ok.std(ddof=1) if ok.size > 1 else np.nan, ok.min(), ok.max()]
        stats = stats if ok.size else [np.nan] * 4
        cells = "".join(f"{v:>11.4f}" if np.isfinite(v) else f"{'-':>11}" for v in stats)
        lines.append(f"{reward:<24}{ok.size:>8}{row.size - ok.size:>10}{cells}")
        reasons = Counter(e for e in result["errors"][k] if e)
        if reasons:
            reason, count = reasons.most_common(1)[0]
            notes.append(f"  {reward}: {count} x {reason}")
    if notes:
        lines += ["", "most common reason an image went unscored:", *notes]
    models = result.get("models", {})
    lines += ["", "scored by:"]
    for reward in result["rewards"]:
        lines.append(f"  {reward}: {models.get(reward) or 'unknown (the server did not say)'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of ``python -m services.eval``."""
    parser = argparse.ArgumentParser(
        prog="python -m services.eval",
        description="Score a folder of images with reward models; writes a CSV and a summary.",
    )
    parser.add_argument("--rewards", required=True, help="comma-separated, e.g. pickscore,ocr")
    parser.add_argument("--images", required=True, type=Path, help="folder of PNG/JPEG files")
    parser.add_argument("--prompts", type=Path, help=".jsonl (file, prompt) or one line per image")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="HTTP ingress, e.g. http://127.0.0.1:8000")
    where.add_argument("--grpc", help="gRPC target, e.g. 127.0.0.1:9000")
    parser.add_argument(
        "--params",
        nargs="+",
        action="extend",
        default=[],
        metavar="REWARD.KEY=VALUE",
        help="in-process reward params, e.g. pickscore.variant=pretrained",
    )
    parser.add_argument("--out", type=Path, help="CSV path (default results/eval/<DIR>.csv)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per request")
    parser.add_argument(
        "--allow-random",
        action="store_true",
        help="score with random-weight test models too (their scores mean nothing)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Validate the inputs, score, write the CSV, print the summary."""
    rewards = [r.strip() for r in args.rewards.split(",") if r.strip()]
    if not rewards or len(set(rewards)) != len(rewards):
        raise EvalError(f"--rewards {args.rewards!r}: name each reward once, comma-separated")
    if args.batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {args.batch_size}")
    remote = bool(args.url or args.grpc)
    if remote and args.params:
        raise EvalError("--params configures in-process rewards; a server uses its own config")
    params = parse_params(args.params, rewards)
    files = list_images(args.images)
    prompts = load_prompts(args.prompts, [f.name for f in files]) if args.prompts else None
    if prompts is None:
        _require_prompts(rewards, strict=not remote)
    if remote:
        scorer = RemoteScorer(rewards, args.url, args.grpc)
    else:
        scorer = LocalScorer(rewards, params, args.allow_random)
    try:
        result = evaluate(scorer, files, prompts, args.batch_size, args.allow_random)
    finally:
        scorer.close()
    out = args.out or Path("results/eval") / f"{args.images.resolve().name or 'images'}.csv"
    write_csv(out, files, prompts, result)
    print(summary_table(result))
    print(f"\n{len(files)} images -> {out}")
    return 0


def _require_prompts(rewards: Sequence[str], strict: bool) -> None:
    """Fail early when a known reward reads prompts and there are none."""
    from services.rewards.base import get_reward_class

    needing = []
    for name in rewards:
        try:
            if get_reward_class(name).needs_prompt:
                needing.append(name)
        except KeyError as exc:
            if strict:
                raise EvalError(exc.args[0]) from None
    if needing:
        raise EvalError(f"reward(s) {', '.join(needing)} read the prompt; pass --prompts FILE")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad arguments or inputs)."""
    args = parse_args(argv)
    try:
        return run(args)
    except EvalError as exc:
        print(f"services.eval: error: {exc}", file=sys.stderr)
        return 2
    except ScoringError as exc:
        print(f"services.eval: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
