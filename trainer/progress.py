"""A progress bar on the driver, fed by the coordinator while Ray Train runs the workers.

The driver is blocked in ``TorchTrainer.fit()``; a thread asks the coordinator for its
latest record once a second and shows epoch, rewards, lambda and the last evaluation.
"""

from __future__ import annotations

import threading
from typing import Any


def _short(name: str) -> str:
    return name[:6]


class ProgressReporter:
    """tqdm bar over epochs; ``close()`` stops the polling thread."""

    def __init__(self, coordinator: Any, objectives: list[str], epochs: int, enabled: bool):
        self.coordinator = coordinator
        self.objectives = objectives
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = None
        if not enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=epochs, desc="train", unit="epoch", dynamic_ncols=True)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import ray

        while not self._stop.wait(1.0):
            try:
                record = ray.get(self.coordinator.progress.remote(), timeout=5)
            except Exception:  # the coordinator may be restarting; try again next tick
                continue
            self.update(record)

    def update(self, record: dict[str, Any]) -> None:
        """Show one coordinator record on the bar."""
        if not record:
            return
        if record.get("kind") == "train" and "epoch" in record:
            self.bar.n = int(record["epoch"]) + 1
        postfix = {}
        means, weights = record.get("reward_mean"), record.get("weights")
        for k, name in enumerate(self.objectives):
            if means and means[k] is not None:
                postfix[_short(name)] = f"{means[k]:.3g}"
            if weights and weights[k] is not None:
                postfix[f"w_{_short(name)}"] = f"{weights[k]:.2f}"
        if record.get("hypervolume") is not None:
            postfix["HV"] = f"{record['hypervolume']:.3g}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """Stop polling and close the bar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self.bar.close()
