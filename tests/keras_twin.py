"""Shared by the tests that train nnrun and Keras side by side from the same weights."""

import keras
import numpy as np
import pytest


def assert_fit_equals_keras(fitter, ts, k, x, y, our_weights, *, epochs=2, batch_size=10,
                            rtol=1e-5, weights_rtol=1e-5):
    """Train `k` (SGD 0.5, mse, no shuffling) and `fitter` for `epochs`; the epoch losses
    and the final weights (`our_weights(ts)`, in Keras's order) must agree."""
    k.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mse")
    history = k.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False,
                    verbose=0).history
    for epoch in range(epochs):   # nnrun pads the last partial batch and masks it
        ts, res = fitter.run_epoch(ts)
        assert res.logs["loss"] == pytest.approx(history["loss"][epoch], rel=rtol)
    for a, b in zip(our_weights(ts), k.get_weights(), strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=weights_rtol, atol=1e-6)
    return ts
