"""The one place that knows how to call a restorer's network.

Everything else in `ented_cli.explain` sees only `restore(lq, refs) -> restored`, with tensors
in [-1, 1]: lq B x 3 x H x W, refs B x N x 3 x H x W. When the generator's signature changes
(e.g. a landmark-warped reference), only `make_restore_fn` changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

RestoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_restore_fn(restorer_or_model, fidelity: float = 0.5) -> RestoreFn:
    """A differentiable restore callable from an `EntedRestorer` (uses its `.model`) or a bare
    generator `model(lq, ref, fidelity)`. Inputs are cast to the model's device and dtype, and
    the output comes back as float32 on the input's device."""
    model = getattr(restorer_or_model, "model", restorer_or_model)
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    dtype = param.dtype if param is not None else None

    def restore(lq: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        out = model(lq.to(device, dtype), refs.to(device, dtype), fidelity)
        return out.to(lq.device, torch.float32)

    return restore
