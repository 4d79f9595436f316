"""The coordinator: one named Ray actor that balances the objectives over the global batch.

:mod:`trainer.coordinator.state` is the pure logic; :mod:`trainer.coordinator.actor` the
Ray shell with Prometheus gauges, persisted state and the run's ``metrics.jsonl``.
"""
