"""The Lightning callback: it runs the monitor during training and writes through the trainer's loggers."""

from __future__ import annotations

import csv

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")
pytest.importorskip("matplotlib")

from fastndb.demo.runner import load_digits_tensor  # noqa: E402
from fastndb.lightning import CollapseCallback  # noqa: E402


class TinyGAN(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.generator = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 8, 8)))

    def training_step(self, batch, batch_idx):
        return self.generator(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class RecordingExperiment:
    """Stands in for TensorBoard's SummaryWriter: records what would be drawn."""

    def __init__(self):
        self.figures, self.images = [], []

    def add_figure(self, tag, figure, step):
        self.figures.append((tag, step))

    def add_images(self, tag, images, step):
        self.images.append((tag, tuple(images.shape), float(images.min()), float(images.max())))


class RecordingLogger(pl.loggers.Logger):
    def __init__(self):
        super().__init__()
        self.metrics, self._experiment = [], RecordingExperiment()

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return 0

    @property
    def experiment(self):
        return self._experiment

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


@pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\)` is deprecated")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_callback_logs_scalars_and_pictures_through_the_loggers(tmp_path):
    digits, _ = load_digits_tensor()
    real = digits.reshape(-1, 1, 8, 8) * 2 - 1  # in the generator's [-1, 1]
    noise = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(256, 8)), batch_size=64)
    seeded = torch.Generator().manual_seed(0)
    callback = CollapseCallback(real, sample=lambda module, n: module.generator(torch.randn(n, 8, generator=seeded)),
                                every_n_epochs=1, num_bins=10, num_samples=400, birthday_samples=200,
                                value_range=(-1, 1))
    recording, csv_logger = RecordingLogger(), pl.loggers.CSVLogger(tmp_path)
    module = TinyGAN()
    trainer = pl.Trainer(max_epochs=2, logger=[csv_logger, recording], callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(module, train_dataloaders=noise)
    assert [h["epoch"] for h in callback.history] == [1, 2]
    assert len(recording.metrics) == 2 and {"fastndb/ndb_ratio", "fastndb/coverage"} <= set(recording.metrics[0][1])
    assert recording.metrics[0][1]["fastndb/ndb_ratio"] == callback.history[0]["fastndb/ndb_ratio"]
    assert [tag for tag, _ in recording.experiment.figures] == ["fastndb/bins"] * 2
    tag, shape, low, high = recording.experiment.images[0]
    assert tag == "fastndb/samples" and shape == (64, 1, 8, 8) and 0 <= low <= high <= 1
    assert module.training  # the module's mode is back
    csv_logger.save()
    with open(f"{csv_logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(1 for r in rows if r.get("fastndb/ndb_ratio")) == 2  # written through the CSV logger too


def test_the_callback_validates_its_arguments():
    with pytest.raises(TypeError, match="sample: expected a function"):
        CollapseCallback(torch.zeros(10, 2), sample=3)
    with pytest.raises(TypeError, match="real: expected a torch.Tensor"):
        CollapseCallback([1, 2], sample=lambda m, n: None)
    with pytest.raises(ValueError, match="every_n_epochs"):
        CollapseCallback(torch.zeros(10, 2), sample=lambda m, n: None, every_n_epochs=0)


@pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\)` is deprecated")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_callback_writes_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    digits, _ = load_digits_tensor()
    noise = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(128, 8)), batch_size=64)
    callback = CollapseCallback(digits.reshape(-1, 1, 8, 8) * 2 - 1,
                                sample=lambda module, n: module.generator(torch.randn(n, 8)), num_bins=10,
                                num_samples=300, birthday_samples=100, value_range=(-1, 1))
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(max_epochs=1, logger=logger, callbacks=[callback], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(TinyGAN(), train_dataloaders=noise)
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"fastndb/ndb_ratio", "fastndb/coverage", "fastndb/num_duplicates"} <= set(tags["scalars"])
    assert {"fastndb/bins", "fastndb/samples"} <= set(tags["images"])  # the bin plot and the sample grid
