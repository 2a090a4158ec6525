"""Every distinct conv and pooling layer of the seeds' networks (``fastconv-bench --suite
networks``), one benchmark group per network, batch, dtype and op."""
import pytest


@pytest.mark.parametrize("op", ["fwd", "bwd"])
def test_network_layer(measure, network_case, op):
    measure(network_case, f"{network_case.kind}-{op}")
