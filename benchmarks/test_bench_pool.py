"""Max pooling forward (with argmax indices) and backward on every backend."""
import pytest


@pytest.mark.parametrize("op", ["pool-fwd", "pool-bwd"])
def test_max_pool(measure, pool_case, op):
    measure(pool_case, op)
