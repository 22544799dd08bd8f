"""A PyTorch Lightning callback that watches a generator for mode collapse while it trains.

:class:`CollapseCallback` fits a :class:`~fastndb.demo.training.CollapseMonitor` on the real samples when training
starts (on the module's device), and every ``every_n_epochs`` epochs draws samples with the function you give it,
scores them (NDB, JS, the birthday test, recall and coverage) and logs the scalars through every logger of the
trainer (``fastndb/ndb_ratio``, ``fastndb/js``, ``fastndb/coverage``, ...). Loggers whose ``experiment`` draws figures
and images (TensorBoard's ``SummaryWriter``: ``add_figure``, ``add_images``) also get the bin proportions and a sample
grid. Needs pytorch-lightning (``pip install pytorch-lightning``); ``import fastndb`` never imports it.

    callback = CollapseCallback(real_images, sample=lambda module, n: module.generator(torch.randn(n, 100,
                                device=module.device)), value_range=(-1, 1))
    trainer = pl.Trainer(callbacks=[callback], logger=TensorBoardLogger("runs"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fastndb._core.checks import check_int
from fastndb._core.optional import require

_pl = require("pytorch_lightning", "fastndb.lightning")


class CollapseCallback(_pl.Callback):
    """Run the collapse monitor every ``every_n_epochs`` training epochs and log what it sees.

    Args:
        real: real samples ``(N, ...)`` (moved to the module's device when training starts).
        sample: ``sample(pl_module, n)`` returns ``n`` generated samples (called under ``torch.no_grad()``, the
            module in eval mode, its mode restored afterwards).
        every_n_epochs: how often to look.
        images: also log the bin plot and a sample grid to loggers that draw (needs matplotlib for the plot).
        **monitor_options: :class:`~fastndb.demo.training.CollapseMonitor`'s options (``num_bins``,
            ``value_range``, ``feature``, ``num_samples``, ``tolerance``, ...).

    Attributes:
        monitor: the monitor (after training started).
        history: the logged scalars of each look, with the epoch.
    """

    def __init__(self, real: Tensor, *, sample: Callable[[Any, int], Tensor], every_n_epochs: int = 1,
                 images: bool = True, **monitor_options: Any) -> None:
        super().__init__()
        if not callable(sample):
            raise TypeError(f"sample: expected a function (pl_module, n) -> samples, got {type(sample).__name__}")
        if not isinstance(real, Tensor):
            raise TypeError(f"real: expected a torch.Tensor of real samples, got {type(real).__name__}")
        self.real, self.sample = real, sample
        self.every_n_epochs = check_int(every_n_epochs, "every_n_epochs", minimum=1)
        self.images = images
        self.monitor_options = monitor_options
        self.monitor: Any = None
        self.history: list[dict] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        from fastndb.demo.training import CollapseMonitor

        if self.monitor is None:
            self.monitor = CollapseMonitor(self.real.to(pl_module.device), **self.monitor_options)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                samples = self.sample(pl_module, self.monitor.num_samples)
        finally:
            pl_module.train(was_training)
        stats = self.monitor.observe(samples, epoch)
        scalars = {f"fastndb/{k}": float(v) for k, v in stats.items() if not isinstance(v, str)}  # not the texts
        scalars["fastndb/decided_missing"] = float(stats["decision"] == "missing")  # the verdict, as a number
        self.history.append({"epoch": epoch, **scalars, "decision": stats["decision"]})
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            if self.images:
                self._log_pictures(logger.experiment if hasattr(logger, "experiment") else None, samples,
                                   trainer.global_step)

    def _log_pictures(self, experiment: Any, samples: Tensor, step: int) -> None:
        """The bin plot and a sample grid, to an ``experiment`` with TensorBoard's ``add_figure``/``add_images``."""
        if experiment is None:
            return
        if hasattr(experiment, "add_figure") and self.monitor.last_result is not None:
            from fastndb import plot

            experiment.add_figure("fastndb/bins", plot.bin_proportions(self.monitor.last_result)[0], step)
        if hasattr(experiment, "add_images") and samples.dim() == 4 and samples.shape[1] in (1, 3):
            from fastndb._core.features import to_float

            grid = to_float(samples[:64].detach(), self.monitor.value_range).clamp(0, 1).cpu()
            experiment.add_images("fastndb/samples", grid, step)
