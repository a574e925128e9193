"""The JSON nesting limit counts containers, whatever the scalars inside them."""

import pytest

from cds_service.api.body import _depth


def nested(levels: int):
    value: object = "leaf"
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("levels,ok", [(0, True), (1, True), (64, True), (65, False)])
def test_depth_limit(levels, ok):
    assert _depth(nested(levels), 64) is ok


def test_wide_shallow_documents_pass():
    assert _depth({"entry": [{"resource": {"id": str(i)}} for i in range(10_000)]}, 4)


def test_scalars_at_top_level_pass():
    assert _depth(5, 1) and _depth(None, 1)
