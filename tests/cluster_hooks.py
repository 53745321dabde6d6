"""Run in every worker process of a test cluster (Ray's `worker_process_setup_hook`), not by pytest.

`small_device` makes the real generator run out of memory on batches of more than one face, as a
small GPU would, so a cluster run has to fall back to smaller batches inside its actors.
"""

import torch


def small_device() -> None:
    from ented_cli.model.restorer import EntedRestorer

    real_init = EntedRestorer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)

        def refuse_batches(module, args):
            if args[0].shape[0] > 1:  # the last decoder layer: most memory already taken
                raise torch.OutOfMemoryError("CUDA out of memory.")

        self.model.convs[-1].register_forward_pre_hook(refuse_batches)

    EntedRestorer.__init__ = init
