"""Convolution forward and backward on every backend (cases: ``fastconv-bench --list``)."""
import pytest


@pytest.mark.parametrize("op", ["conv-fwd", "conv-bwd"])
def test_conv(measure, conv_case, op):
    measure(conv_case, op)
