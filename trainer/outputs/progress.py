"""The one progress bar of a training run, on the driver, fed by the run log.

The driver is blocked in ``TorchTrainer.fit()`` while the workers train; the run log
(:mod:`trainer.coordinator.run_log`) holds every record the workers send. A thread calls
``fetch`` (given by the driver, which asks the run log) for the newest ``train`` and
``eval`` records once a second;
:meth:`ProgressReporter.close` asks once more after ``fit()`` has returned, so the bar
always ends on the last epoch (N/N), also after a resume. Training and
evaluation numbers are labelled apart: ``ocr 0.61`` is the last epoch's batch mean,
``eval@42 ocr 0.70`` the last evaluation's, ``λ`` the priorities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

SHORT = {"prompt_alignment": "align", "colorfulness": "colour", "jpeg_compressibility": "jpeg"}


def short_name(name: str) -> str:
    """A reward's name as the bar shows it (a few well-known ones shortened)."""
    return SHORT.get(name, name[:8])


def describe(records: dict[str, dict[str, Any]], objectives: list[str]) -> str:
    """``train: ocr 0.61 align 0.64 | λ .50 .20 .15 .15 | eval@42: ocr 0.70 ...`` from the
    coordinator's newest ``train`` and ``eval`` records (either may be missing)."""
    parts = []
    train, evaluation = records.get("train") or {}, records.get("eval") or {}
    if train.get("reward_mean"):
        parts.append("train: " + _values(train["reward_mean"], objectives))
    if train.get("weights"):
        parts.append("λ " + " ".join(f"{w:.2f}" for w in train["weights"] if w is not None))
    if evaluation.get("reward_mean"):
        parts.append(
            f"eval@{evaluation.get('step', '?')}: " + _values(evaluation["reward_mean"], objectives)
        )
    return " | ".join(parts)


def _values(values: list[float | None], objectives: list[str]) -> str:
    return " ".join(
        f"{short_name(name)} {v:.3g}" if v is not None else f"{short_name(name)} -"
        for name, v in zip(objectives, values, strict=False)
    )


class ProgressReporter:
    """tqdm bar over epochs; ``close()`` takes the final records and stops the thread.

    ``fetch()`` returns ``{"train": record, "eval": record}`` (either may be missing), or None
    when there is nothing to show yet; it is never called when the bar is disabled.
    """

    def __init__(
        self,
        fetch: Callable[[], dict[str, dict[str, Any]] | None],
        objectives: list[str],
        epochs: int,
        enabled: bool,
    ):
        self.fetch = fetch
        self.objectives = objectives
        self.epochs = epochs
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = None
        self._shown: tuple[int, str] | None = None  # what the bar shows now
        if not enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=epochs, desc="epochs", unit="epoch", dynamic_ncols=True)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            records = self.fetch()
            if records:
                self.update(records)

    def update(self, records: dict[str, dict[str, Any]]) -> None:
        """Show the newest ``train``/``eval`` records on the bar."""
        train = records.get("train") or {}
        done = self.bar.n
        if "epoch" in train:
            done = min(int(train["epoch"]) + 1, self.epochs)
        text = describe(records, self.objectives)
        if (done, text) == self._shown:
            return  # nothing new: off a terminal every refresh would print another line
        self._shown = (done, text)
        self.bar.n = done
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """Stop polling, show the final records (the bar ends at the last epoch), close."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=5)
        records = self.fetch()
        if records:
            self.update(records)
        self.bar.close()
