"""The restorer a benchmark times: a real weight set, or a model preset with random weights.

Random weights give valid timings only (the same layers and shapes do the same work), never
valid pictures; they let tests run on the `tiny` preset and let users compare architecture
sizes before training one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ented_cli.errors import UsageError


@dataclass
class BenchModel:
    weight_set: object  # ented_cli.model.weights.WeightSet
    name: str
    random_init: bool
    params_m: float


def presets() -> list[str]:
    from ented_cli.model.config import PRESETS

    return sorted(PRESETS)


def resolve_model(
    weights: str | None, config: str | None, download: bool, keep_dir: Path
) -> BenchModel:
    """The weight set to time. With `config`, a random-init weight set of that preset is written
    to `keep_dir` (which the caller removes) and loaded the normal way, so the timed restorer is
    exactly the one `ented restore` builds."""
    from ented_cli.model.weight_lookup import resolve_weights

    if config is None:
        ws = resolve_weights(weights, download=download)
        return BenchModel(ws, ws.name, False, _params_m(ws.config))
    if weights is not None:
        raise UsageError("--config times random weights; drop --weights (or --config)")
    import torch

    from ented_cli.model.config import preset
    from ented_cli.model.generator import EntedGenerator
    from ented_cli.model.weights import save_weight_set

    try:
        cfg = preset(config)
    except ValueError:
        raise UsageError(
            f"--config {config!r} is unknown; use one of {', '.join(presets())}"
        ) from None
    torch.manual_seed(0)
    model = EntedGenerator(cfg)
    name = f"{config}-random"
    manifest = save_weight_set(model.state_dict(), keep_dir, name, cfg.to_dict(), card=None)
    ws = resolve_weights(str(manifest))
    return BenchModel(ws, name, True, round(sum(p.numel() for p in model.parameters()) / 1e6, 2))


def _params_m(config: dict) -> float | None:
    """Parameter count (millions) of the generator a config describes, built on the meta device
    (no memory, no time)."""
    import torch

    from ented_cli.model.config import EntedConfig
    from ented_cli.model.generator import EntedGenerator

    try:
        with torch.device("meta"):
            model = EntedGenerator(EntedConfig.from_dict(config))
    except (TypeError, ValueError, RuntimeError):
        return None
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


def temporary_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="ented-bench-")
