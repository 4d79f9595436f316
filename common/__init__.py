"""What the reward services and the trainer both need and neither owns.

The layout rule (``tests/unit/test_layout.py``) keeps ``services`` and ``trainer`` apart: the
trainer reaches rewards through the client only. Plain data and pure functions that both sides
must agree on live here instead, and this package imports neither side.
"""
