"""first_item: the first sample's value of a collated field."""

from __future__ import annotations

import pytest
import torch

from evssl.utils.batch import first_item


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (torch.tensor([5, 6]), 5),  # collated ints
        (torch.tensor([[7], [8]]), 7),  # any shape: element 0 of the flattened tensor
        (torch.tensor(9), 9),  # 0-d
        ([3, 4], 3),
        ((True, False), True),
        (2, 2),  # a plain scalar (batch built by hand)
        (False, False),
    ],
)
def test_first_item(value, expected) -> None:
    assert first_item(value) == expected
    assert int(first_item(value)) == int(expected) and bool(first_item(value)) == bool(expected)
