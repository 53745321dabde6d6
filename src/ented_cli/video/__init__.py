"""Videos through the restore pipeline: container I/O (`container.py`), face tracks with smoothed
landmarks (`tracking.py`), the streaming runner (`runner.py`), the flicker measure
(`flicker.py`) and test clips (`synthetic.py`)."""
