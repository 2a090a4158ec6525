"""One training step (forward + backward) of the book's SimpleConvNet, batch 100, per backend."""
import pytest


@pytest.mark.parametrize("op", ["train-step"])
def test_simpleconvnet_step(measure, train_case, op):
    loss, grads = measure(train_case, op)
    assert 2.0 < loss < 2.6  # ~ln(10): small random weights give near-uniform class scores
    assert set(grads) == {"W1", "b1", "W2", "b2", "W3", "b3"}
