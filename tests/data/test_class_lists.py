"""Issue 18 §5: a checkpoint remembers its training store's class list; test/resume on a store whose list differs
is refused, naming the first difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evssl.data.datamodules import EventDataModule
from evssl.events.io.store import StoreWriter
from evssl.events.schema import Events


def _store(path: Path, classes: list[str]) -> Path:
    rng = np.random.default_rng(0)
    with StoreWriter(path) as w:
        w.set_classes(classes)
        for k in range(len(classes)):
            t = np.sort(rng.integers(0, 10_000, 30))
            ev = Events.from_arrays(rng.integers(0, 8, 30), rng.integers(0, 6, 30), t, rng.integers(0, 2, 30), 6, 8,
                                    polarity="01")  # fmt: skip
            w.add(ev, name=f"r{k}", label=k, split="test")
    return path


def test_checkpoint_class_list_must_match_the_store(tmp_path: Path) -> None:
    train = EventDataModule(source=str(_store(tmp_path / "train.h5", ["digit_0", "digit_2", "digit_7"])))
    state = train.state_dict()
    assert state["classes"] == ["digit_0", "digit_2", "digit_7"]
    same = EventDataModule(source=str(_store(tmp_path / "same.h5", ["digit_0", "digit_2", "digit_7"])))
    same.load_state_dict(state)
    other = EventDataModule(source=str(_store(tmp_path / "test.h5", ["digit_0", "digit_7"])))
    with pytest.raises(ValueError, match=r"test\.h5 has class 'digit_7' at index 1 where the checkpoint's training"):
        other.load_state_dict(state)
    other.load_state_dict({})  # checkpoints written before the class list was saved


@pytest.mark.parametrize("workers", [0, 1])
def test_datamodule_set_up_before_a_replacement_refuses_the_new_file(tmp_path: Path, workers: int) -> None:
    """Issue 13 §2: batches never come from a file that replaced the one the splits were read from."""
    from evssl.events.io.store import StoreChangedError

    path = _store(tmp_path / "s.h5", ["a", "b", "c", "d"])
    dm = EventDataModule(source=str(path), batch_size=2, num_workers=workers, persistent_workers=False,
                         train_split="test", val_split=None, test_split=None, drop_last=False)  # fmt: skip
    dm.setup("fit")
    _store(tmp_path / "s.h5", ["a", "b"])  # re-converted in between: fewer recordings
    with pytest.raises(StoreChangedError, match=r"s\.h5: the file was replaced"):
        next(iter(dm.train_dataloader()))
