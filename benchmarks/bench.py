"""nnrun vs Keras 3 (JAX backend) and PyTorch: training throughput and first-epoch time,
in one process.

    python benchmarks/bench.py [--only small|mlp|cnn|lstm] [--quick] [--epochs-mlp N]
                               [--repeat N] [--cpu-devices N]

Workloads (DESIGN.md section 6; the targets are nnrun >= 10x Keras on "small",
>= 1.1x Keras on "mlp", >= 2.5x Keras and faster than PyTorch on "cnn", >= 1.2x Keras
on "lstm", first epoch no slower than Keras):

  small  the founding notes' network: 1,000 xor samples of 2 features, Dense 5 relu,
         Dense 1 sigmoid, SGD(lr 0.01), mse, batch 10, 100 epochs, no validation.
  mlp    MNIST-sized MLP: 60,000 x 784 random float32, 10 classes (sparse int labels),
         Dense 512 relu, Dropout 0.2, Dense 512 relu, Dropout 0.2, Dense 10 softmax,
         Adam, sparse_categorical_crossentropy, batch 128, 3 epochs (2 with --quick).
  digits (only with --only digits; scikit-learn) 1,797 x 64 digits, Dense 64 relu,
         Dense 10 softmax, Adam, sparse_categorical_crossentropy, batch 32, 50 epochs.
  cnn    (only with --only cnn) 10,000 x 28x28x1 random images, 10 classes: Conv2D 32,
         MaxPool, Conv2D 64, MaxPool, Flatten, Dense 128, Dense 10; Adam, batch 128.
  lstm   (only with --only lstm) 10,000 x 50 steps x 32 features: LSTM 64, Dense 1
         sigmoid; RMSprop, binary_crossentropy, batch 64.

For each workload it times, in this order:
  nnrun train()   the full `nnrun.api.train` path: data load, model build, run directory,
                  metrics log and checkpoint writes (the headline number);
  nnrun Fitter    only the in-process epoch loop (`Fitter.run_epoch`, synchronous);
  Keras fit       `model.fit(..., verbose=0, shuffle=True)`; on small and digits also
                  with compile(steps_per_execution=<steps per epoch>): an epoch per call;
  PyTorch (eager) the same network in a plain PyTorch CPU training loop (when torch is
                  installed: `pip install torch==2.13.0`), Keras's optimizer defaults;
  hand-written    the limit (issue 21): the same network in plain JAX + optax (jax.grad,
                  the LSTM a plain lax.scan), each epoch one jitted lax.scan over
                  on-device batches.
--json FILE also writes the numbers as JSON. --cpu-devices N (N > 1) makes JAX's CPU
backend N devices (jax_num_cpu_devices, what `nnrun train` does for fit.devices: N)
and adds a runner after the first:
  nnrun train() N devices   the same, with fit.devices: N (data parallelism; the
                  recurrent layers' loops run per device). Every other nnrun runner
                  keeps one device (fit.devices: 1).
samples/s is steady state: epochs after the first, from the end of epoch 1 to the
end of the last epoch; "CPU s/epoch" is the process CPU time per steady epoch (less
disturbed by other processes). "first epoch" is wall time from the call that starts
training (train() / Fitter construction / keras.Sequential) to the end of epoch 1,
weight init and compile included (NNRUN_NO_COMPILE_CACHE=1, the persistent JAX cache
off, jax.clear_caches() before every runner: every program is new). Imports and a
trivial JAX op run before any timing. With --repeat N (default 2) each runner runs N
times and each column is the median of the repeats (--best: the best). Results and how to read them:
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["NNRUN_NO_COMPILE_CACHE"] = "1"

import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


@dataclass
class Timing:
    """Epoch-end timestamps relative to the start of the training call."""

    name: str
    samples: int  # per epoch
    ends: list[float] = field(default_factory=list)
    cpu_ends: list[float] = field(default_factory=list)  # process CPU seconds, all threads
    total: float = 0.0  # the whole call, setup and teardown included
    note: str = ""

    def mark(self, start: float, cpu_start: float) -> None:
        self.ends.append(time.perf_counter() - start)
        self.cpu_ends.append(time.process_time() - cpu_start)

    @property
    def first_epoch(self) -> float:
        return self.ends[0]

    @property
    def steady_epoch(self) -> float:
        if len(self.ends) < 2:
            return float("nan")
        return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.steady_epoch

    @property
    def steady_cpu(self) -> float:
        """CPU seconds per steady epoch: less sensitive than wall time to other processes."""
        if len(self.cpu_ends) < 2:
            return float("nan")
        return (self.cpu_ends[-1] - self.cpu_ends[0]) / (len(self.cpu_ends) - 1)


# ---------------------------------------------------------------- workloads


@dataclass
class Workload:
    key: str
    title: str
    x: np.ndarray
    y: np.ndarray
    cfg: dict  # the nnrun config, with data.train filled in
    keras_layers: list  # callables building the Keras layers
    keras_optimizer: object
    keras_loss: str
    batch_size: int
    epochs: int
    # (torch) -> (module, loss, optimizer factory, x layout, label dtype): the PyTorch twin
    # (classifiers end in logits, their loss includes the softmax / sigmoid)
    torch_model: object = None


def small_workload(workdir: Path) -> Workload:
    from nnrun.data import sources as data_mod

    x, y = data_mod.generate("xor", 1000, 0)
    cfg = {
        "name": "bench-small",
        "seed": 0,
        "data": {"train": {"builtin": "xor", "samples": 1000}},
        "model": {
            "input_shape": [2],
            "layers": [
                {"Dense": {"units": 5, "activation": "relu"}},
                {"Dense": {"units": 1, "activation": "sigmoid"}},
            ],
        },
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.01}, "loss": "mse"},
        "fit": {"batch_size": 10, "epochs": 100, "shuffle": True},
    }

    def layers(keras):
        return [
            keras.Input((2,)),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]

    return Workload(
        "small",
        "small: 2-5-1, SGD, batch 10, 1,000 samples",
        x,
        y,
        cfg,
        layers,
        lambda keras: keras.optimizers.SGD(learning_rate=0.01),
        "mse",
        10,
        100,
        torch_model=lambda torch: (
            torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1),
                                torch.nn.Sigmoid()),
            torch.nn.MSELoss(), lambda params: torch.optim.SGD(params, lr=0.01), lambda x: x,
            torch.float32),
    )


def _npz_workload(workdir, key, title, x, y, layers_cfg, keras_layers, optimizer, keras_opt,
                  loss, batch_size, epochs) -> Workload:
    path = workdir / f"{key}.npz"
    np.savez(path, x=x, y=y)
    cfg = {"name": f"bench-{key}", "seed": 0,
           "data": {"train": {"path": str(path), "x": "x", "y": "y"}},
           "model": {"input_shape": list(x.shape[1:]), "layers": layers_cfg},
           "compile": {"optimizer": optimizer, "loss": loss},
           "fit": {"batch_size": batch_size, "epochs": epochs, "shuffle": True}}
    return Workload(key, title, x, y, cfg, keras_layers, keras_opt, loss, batch_size, epochs)


def cnn_workload(workdir: Path, epochs: int) -> Workload:
    """Issue 3's CNN: 10,000 x 28x28x1, Conv2D 32, MaxPool, Conv2D 64, MaxPool, Flatten,
    Dense 128, Dense 10, Adam, batch 128."""
    rng = np.random.default_rng(0)
    x = rng.random((10_000, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=(10_000,)).astype(np.int32)
    layers_cfg = [{"Conv2D": {"filters": 32, "kernel_size": 3, "activation": "relu"}},
                  {"MaxPooling2D": {}},
                  {"Conv2D": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
                  {"MaxPooling2D": {}}, {"Flatten": {}},
                  {"Dense": {"units": 128, "activation": "relu"}},
                  {"Dense": {"units": 10, "activation": "softmax"}}]

    def layers(keras):
        return [keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                keras.layers.MaxPooling2D(), keras.layers.Conv2D(64, 3, activation="relu"),
                keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dense(10, activation="softmax")]

    def torch_model(torch):
        nn = torch.nn
        net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10))
        # softmax + cross-entropy as one op on logits; Keras's Adam defaults
        return (net, nn.CrossEntropyLoss(),
                lambda params: torch.optim.Adam(params, lr=1e-3, eps=1e-7),
                lambda x: x.permute(0, 3, 1, 2).contiguous(), torch.long)

    w = _npz_workload(workdir, "cnn", f"cnn: 10,000 x 28x28x1, Adam, batch 128, {epochs} "
                      "epochs", x, y, layers_cfg, layers, "adam",
                      lambda keras: keras.optimizers.Adam(),
                      "sparse_categorical_crossentropy", 128, epochs)
    w.torch_model = torch_model
    return w


def lstm_workload(workdir: Path, epochs: int) -> Workload:
    """Issue 3's LSTM: 10,000 x 50 steps x 32 features, LSTM 64, Dense 1 sigmoid, RMSprop,
    batch 64."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, 50, 32)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1, keepdims=True) > 0).astype(np.float32)
    layers_cfg = [{"LSTM": {"units": 64}}, {"Dense": {"units": 1, "activation": "sigmoid"}}]

    def layers(keras):
        return [keras.Input((50, 32)), keras.layers.LSTM(64),
                keras.layers.Dense(1, activation="sigmoid")]

    def torch_model(torch):
        nn = torch.nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(32, 64, batch_first=True)
                self.out = nn.Linear(64, 1)

            def forward(self, x):
                seq, _ = self.lstm(x)
                return self.out(seq[:, -1])

        # sigmoid + binary cross-entropy as one op on logits; Keras's RMSprop defaults
        return (Net(), nn.BCEWithLogitsLoss(),
                lambda params: torch.optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-7),
                lambda x: x, torch.float32)

    w = _npz_workload(workdir, "lstm", f"lstm: 10,000 x 50 x 32, RMSprop, batch 64, "
                      f"{epochs} epochs", x, y, layers_cfg, layers, "rmsprop",
                      lambda keras: keras.optimizers.RMSprop(), "binary_crossentropy",
                      64, epochs)
    w.torch_model = torch_model
    return w


def digits_workload(workdir: Path) -> Workload:
    """scikit-learn's digits (1,797 x 64, pixel values / 16), 64-64-10, Adam, batch 32,
    50 epochs (issue 21's "digits MLP"); needs scikit-learn."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    path = workdir / "digits.npz"
    np.savez(path, x=x, y=y)
    cfg = {
        "name": "bench-digits", "seed": 0,
        "data": {"train": {"path": str(path), "x": "x", "y": "y"}},
        "model": {"input_shape": [64], "layers": [
            {"Dense": {"units": 64, "activation": "relu"}},
            {"Dense": {"units": 10, "activation": "softmax"}}]},
        "compile": {"optimizer": {"name": "adam"}, "loss": "sparse_categorical_crossentropy"},
        "fit": {"batch_size": 32, "epochs": 50, "shuffle": True},
    }

    def layers(keras):
        return [keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(10, activation="softmax")]

    return Workload(
        "digits", "digits: 64-64-10, Adam, batch 32, 1,797 samples, 50 epochs", x, y, cfg,
        layers, lambda keras: keras.optimizers.Adam(), "sparse_categorical_crossentropy",
        32, 50,
        torch_model=lambda torch: (
            torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10)),
            torch.nn.CrossEntropyLoss(),
            lambda params: torch.optim.Adam(params, lr=1e-3, eps=1e-7), lambda x: x,
            torch.long),
    )


def mlp_workload(workdir: Path, epochs: int) -> Workload:
    rng = np.random.default_rng(0)
    x = rng.random((60_000, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=(60_000,)).astype(np.int32)
    path = workdir / "mlp.npz"
    np.savez(path, x=x, y=y)
    cfg = {
        "name": "bench-mlp",
        "seed": 0,
        "data": {"train": {"path": str(path), "x": "x", "y": "y"}},
        "model": {
            "input_shape": [784],
            "layers": [
                {"Dense": {"units": 512, "activation": "relu"}},
                {"Dropout": {"rate": 0.2}},
                {"Dense": {"units": 512, "activation": "relu"}},
                {"Dropout": {"rate": 0.2}},
                {"Dense": {"units": 10, "activation": "softmax"}},
            ],
        },
        "compile": {"optimizer": {"name": "adam"}, "loss": "sparse_categorical_crossentropy"},
        "fit": {"batch_size": 128, "epochs": epochs, "shuffle": True},
    }

    def layers(keras):
        return [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]

    return Workload(
        "mlp",
        f"mlp: 784-512-512-10, Adam, batch 128, 60,000 samples, {epochs} epochs",
        x,
        y,
        cfg,
        layers,
        lambda keras: keras.optimizers.Adam(),
        "sparse_categorical_crossentropy",
        128,
        epochs,
        torch_model=lambda torch: (
            torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(512, 10)),
            torch.nn.CrossEntropyLoss(),
            lambda params: torch.optim.Adam(params, lr=1e-3, eps=1e-7), lambda x: x,
            torch.long),
    )


# ---------------------------------------------------------------- runners


def time_nnrun_train(w: Workload, workdir: Path, devices: int = 1) -> Timing:
    """The full `nnrun.api.train` path (with fit.devices: `devices`); epoch ends are
    taken after each checkpointer call.

    (main() imports the modules `train()` imports lazily before any clock starts, as
    `import keras` is for Keras.)
    """
    import jax
    import jax.monitoring

    from nnrun import api
    from nnrun.config.spec import spec_from_dict
    from nnrun.train.checkpoint import Checkpointer

    spec = spec_from_dict({**w.cfg, "fit": {**w.cfg["fit"], "devices": devices}})
    t = Timing("nnrun train()" + (f" {devices} devices" if devices > 1 else ""), len(w.x))
    original, original_load = Checkpointer.epoch_end, api.load_data
    start = cpu_start = 0.0
    load_seconds = []

    def epoch_end(self, *args, **kwargs):
        original(self, *args, **kwargs)
        t.mark(start, cpu_start)

    late_compiles = []   # XLA compiles after epoch 1 (issue 21: there must be none)

    def compiled(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and t.ends:
            late_compiles.append(duration)

    def load_data(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original_load(*args, **kwargs)
        finally:
            load_seconds.append(time.perf_counter() - began)

    runs = workdir / f"runs-{w.key}-{devices}"
    Checkpointer.epoch_end, api.load_data = epoch_end, load_data
    jax.monitoring.register_event_duration_secs_listener(compiled)
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = api.train(spec, runs_root=runs, quiet=True)
        t.total = time.perf_counter() - start
    finally:
        Checkpointer.epoch_end, api.load_data = original, original_load
        jax.monitoring.unregister_event_duration_listener(compiled)
    if result.status != "finished":
        raise RuntimeError(f"nnrun train: {result.status} ({result.stop_reason})")
    t.note = (
        f"loss {result.history['loss'][-1]:.4f}; first epoch includes data load "
        f"{sum(load_seconds):.2f}s; XLA compiles after epoch 1: {len(late_compiles)}"
    )
    shutil.rmtree(runs, ignore_errors=True)
    return t


def time_nnrun_fitter(w: Workload) -> Timing:
    """Only the epoch loop: Fitter construction (device transfer), init, run_epoch per epoch."""
    from nnrun import api
    from nnrun.config.spec import spec_from_dict
    from nnrun.train.fitter import Fitter

    spec = spec_from_dict(w.cfg)
    splits = api.load_data(spec)
    model = api.build(spec, splits.train.x.shape[1:])
    obj = api.objective_for(spec, model, splits.train.y)
    t = Timing("nnrun Fitter", len(splits.train.x))
    start, cpu_start = time.perf_counter(), time.process_time()
    fitter = Fitter(
        model,
        obj,
        spec.compile.optimizer,
        seed=spec.seed,
        batch_size=spec.fit.batch_size,
        shuffle=spec.fit.shuffle,
        x=splits.train.x,
        y=splits.train.y,
    )
    ts = fitter.initial_state()
    for _ in range(spec.fit.epochs):
        ts, res = fitter.run_epoch(ts)  # returns after the epoch's metrics were read back
        t.mark(start, cpu_start)
    t.total = time.perf_counter() - start
    t.note = f"loss {res.logs['loss']:.4f}"
    return t


def time_keras(w: Workload, steps_per_execution: int = 1) -> Timing:
    """Sequential construction (weight init), compile() and fit(); the clock starts before
    the model is built, as nnrun's includes its model build and weight init. With
    `steps_per_execution` > 1, compile(steps_per_execution=...) runs that many steps
    per call of its jitted function."""
    import keras

    t = Timing("Keras fit" if steps_per_execution == 1 else
               f"Keras fit, steps_per_execution={steps_per_execution}", len(w.x))

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            t.mark(start, cpu_start)

    keras.utils.set_random_seed(0)
    start, cpu_start = time.perf_counter(), time.process_time()
    model = keras.Sequential(w.keras_layers(keras))
    model.compile(optimizer=w.keras_optimizer(keras), loss=w.keras_loss,
                  steps_per_execution=steps_per_execution)
    hist = model.fit(
        w.x,
        w.y,
        batch_size=w.batch_size,
        epochs=w.epochs,
        verbose=0,
        shuffle=True,
        callbacks=[EpochTimes()],
    )
    t.total = time.perf_counter() - start
    t.note = f"loss {hist.history['loss'][-1]:.4f}"
    return t


def time_torch(w: Workload) -> Timing:
    """PyTorch (CPU, eager) training loop of the same network: shuffled batches indexed
    from in-memory tensors, zero_grad / forward / loss / backward / step; all cores."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    t = Timing("PyTorch (eager)", len(w.x))
    start, cpu_start = time.perf_counter(), time.process_time()
    net, loss_fn, make_opt, layout, y_dtype = w.torch_model(torch)
    opt = make_opt(net.parameters())
    x = layout(torch.from_numpy(w.x))
    y = torch.from_numpy(w.y).to(y_dtype)
    n = len(x)
    gen = torch.Generator().manual_seed(0)
    for _ in range(w.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, w.batch_size):
            idx = order[i:i + w.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
        t.mark(start, cpu_start)
    t.total = time.perf_counter() - start
    t.note = f"loss {float(loss.detach()):.4f} (last batch)"
    return t


def time_limit(w: Workload) -> Timing | None:
    """The hand-written limit (issue 21): the same network written in plain JAX and
    optax (Dense, Dropout, Conv2D, MaxPooling2D, Flatten, LSTM; gradients by jax.grad,
    the LSTM a plain lax.scan), each epoch one jitted `lax.scan` over on-device batches
    of a permutation drawn on the host: nothing else (no metrics, logs or
    checkpoints). Full batches only (a last partial batch is left out; samples/s counts
    the rows trained). None for a layer it does not cover."""
    import jax
    import jax.numpy as jnp
    import optax

    layers = w.cfg["model"]["layers"]
    covered = ("Dense", "Dropout", "Conv2D", "MaxPooling2D", "Flatten", "LSTM")
    if any(next(iter(item)) not in covered for item in layers):
        return None
    opt_cfg = w.cfg["compile"]["optimizer"]
    name = opt_cfg if isinstance(opt_cfg, str) else opt_cfg["name"]
    rate = 0.001 if isinstance(opt_cfg, str) else opt_cfg.get("learning_rate", 0.001)
    opt = {"sgd": lambda: optax.sgd(rate), "adam": lambda: optax.adam(rate, eps=1e-7),
           "rmsprop": lambda: optax.rmsprop(rate, decay=0.9, eps=1e-7)}[name]()
    loss_name = w.cfg["compile"]["loss"]
    acts = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "softmax": None, None: None}
    t = Timing("hand-written JAX", 0)
    start, cpu_start = time.perf_counter(), time.process_time()
    key = jax.random.PRNGKey(0)

    def glorot(key, shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, jnp.float32, -limit, limit)

    params, plan, shape = [], [], w.x.shape[1:]
    for n, item in enumerate(layers):
        (cls, args), = item.items()
        key, sub = jax.random.split(key)
        if cls == "Dense":
            width = int(np.prod(shape))
            params.append((glorot(sub, (width, args["units"]), width, args["units"]),
                           jnp.zeros(args["units"], jnp.float32)))
            logits = n == len(layers) - 1 and loss_name == "binary_crossentropy"
            plan.append(("dense", None if logits else args.get("activation")))
            shape = (args["units"],)
        elif cls == "Conv2D":
            k, cin, cout = args["kernel_size"], shape[-1], args["filters"]
            params.append((glorot(sub, (k, k, cin, cout), k * k * cin, k * k * cout),
                           jnp.zeros(cout, jnp.float32)))
            plan.append(("conv", args.get("activation")))
            shape = (shape[0] - k + 1, shape[1] - k + 1, cout)
        elif cls == "MaxPooling2D":
            plan.append(("pool", None))
            shape = (shape[0] // 2, shape[1] // 2, shape[2])
        elif cls == "Flatten":
            plan.append(("flatten", None))
            shape = (int(np.prod(shape)),)
        elif cls == "LSTM":
            units, features = args["units"], shape[-1]
            k1, k2 = jax.random.split(sub)
            params.append((glorot(k1, (features, 4 * units), features, 4 * units),
                           glorot(k2, (units, 4 * units), units, 4 * units),
                           jnp.zeros(4 * units, jnp.float32).at[units:2 * units].set(1.0)))
            plan.append(("lstm", units))
            shape = (units,)
        else:
            plan.append(("dropout", args["rate"]))

    def lstm(x, kernel, recurrent, bias, units):
        z = jnp.einsum("btf,fg->tbg", x, kernel) + bias
        h = c = jnp.zeros((x.shape[0], units), x.dtype)

        def step(carry, zt):
            h, c = carry
            i, f, g, o = jnp.split(zt + h @ recurrent, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

        (h, _), _ = jax.lax.scan(step, (h, c), z)
        return h

    def forward(params, x, key):
        i = 0
        for kind, arg in plan:
            if kind in ("dense", "conv"):
                kernel, bias = params[i]
                i += 1
                if kind == "dense":
                    x = x @ kernel + bias
                else:
                    x = jax.lax.conv_general_dilated(
                        x, kernel, (1, 1), "VALID",
                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
                if arg not in ("softmax", None):
                    x = acts[arg](x)
            elif kind == "pool":   # 2x2, stride 2 (reduce_window's gradient is slow here)
                b, h, wd, c = x.shape
                x = x[:, :h // 2 * 2, :wd // 2 * 2].reshape(b, h // 2, 2, wd // 2, 2, c)
                x = x.max(axis=(2, 4))
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "lstm":
                x = lstm(x, *params[i], arg)
                i += 1
            else:
                key, sub = jax.random.split(key)
                keep = jax.random.bernoulli(sub, 1.0 - arg, x.shape)
                x = jnp.where(keep, x / (1.0 - arg), 0.0)
        return x

    def loss_fn(params, x, y, key):
        out = forward(params, x, key)
        if loss_name == "mse":
            return jnp.mean((out[:, 0] - y.reshape(-1)) ** 2)
        if loss_name == "binary_crossentropy":   # on the sigmoid's logits, as PyTorch's
            return optax.sigmoid_binary_cross_entropy(out[:, 0], y.reshape(-1)).mean()
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def epoch(params, opt_state, x, y, order, key):
        def step(carry, idx):
            params, opt_state, key = carry
            key, sub = jax.random.split(key)
            loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx], sub)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), loss
        (params, opt_state, key), losses = jax.lax.scan(step, (params, opt_state, key), order)
        return params, opt_state, losses.mean()

    run_epoch = jax.jit(epoch, donate_argnums=(0, 1))
    x, y = jax.device_put(w.x), jax.device_put(w.y)
    opt_state = opt.init(params)
    rng = np.random.default_rng(0)
    batches = len(w.x) // w.batch_size
    t.samples = batches * w.batch_size
    for e in range(w.epochs):
        order = rng.permutation(len(w.x))[: t.samples].reshape(batches, w.batch_size)
        params, opt_state, loss = run_epoch(params, opt_state, x, y, jnp.asarray(order),
                                            jax.random.fold_in(key, e))
        loss = float(loss)
        t.mark(start, cpu_start)
    t.total = time.perf_counter() - start
    t.note = f"loss {loss:.4f} (epoch mean)"
    return t


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- reporting


def machine_info() -> list[str]:
    import jax
    import keras

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- host: {platform.machine()} {platform.processor() or ''} "
        f"{_cpu_model()}; os.cpu_count()={os.cpu_count()}; "
        f"affinity={len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}",
        f"- load average (1/5/15 min) at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- python {platform.python_version()}, numpy {np.__version__}, jax {jax.__version__}, "
        f"jaxlib {_version('jaxlib')}, keras {keras.__version__} "
        f"(backend {keras.backend.backend()}), nnrun {_version('nnrun')}",
        f"- devices: {jax.devices()}",
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "(" + line.split(":", 1)[1].strip() + ")"
    except OSError:
        pass
    return ""


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _best(a: Timing, b: Timing) -> Timing:
    """The run with the faster steady state, given the faster first epoch of the two
    (its epoch ends shift; its total stays that of its own run)."""
    fast = a if a.samples_per_s >= b.samples_per_s else b
    other = b if fast is a else a
    if other.first_epoch < fast.first_epoch:
        shift = fast.ends[0] - other.first_epoch
        fast.ends = [e - shift for e in fast.ends]
    if other.steady_cpu < fast.steady_cpu:
        fast.cpu_ends, other.cpu_ends = other.cpu_ends, fast.cpu_ends
    return fast


def _median(runs: list[Timing]) -> Timing:
    """The run of median steady throughput (the lower middle of an even count), its first
    epoch and CPU time per epoch replaced by the medians of the runs' (its epoch ends
    shifted; its total stays that of its own run)."""
    ranked = sorted(runs, key=lambda t: t.samples_per_s)
    mid = ranked[(len(ranked) - 1) // 2]
    first = float(np.median([t.first_epoch for t in runs]))
    mid.ends = [e - (mid.ends[0] - first) for e in mid.ends]
    by_cpu = sorted(runs, key=lambda t: t.steady_cpu)
    mid.cpu_ends = list(by_cpu[(len(by_cpu) - 1) // 2].cpu_ends)
    return mid


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds:.2f}"


def table(rows: list[tuple[Workload, list[Timing]]]) -> str:
    lines = [
        "| workload | runner | samples/s (steady) | vs Keras | vs hand-written | CPU s/epoch "
        "| vs Keras (CPU) | first epoch (s) | vs Keras | total (s) | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for w, timings in rows:
        keras_t = next(t for t in timings if t.name.startswith("Keras"))
        limit_t = next((t for t in timings if t.name.startswith("hand-written")), None)
        for t in timings:
            ratio = t.samples_per_s / keras_t.samples_per_s
            first = keras_t.first_epoch / t.first_epoch  # > 1: faster than Keras
            cpu = keras_t.steady_cpu / t.steady_cpu
            vs_limit = f"{t.samples_per_s / limit_t.samples_per_s:.2f}x" if limit_t else "-"
            lines.append(
                f"| {w.key} | {t.name} | {t.samples_per_s:,.0f} | {ratio:.2f}x | {vs_limit} "
                f"| {_fmt_s(t.steady_cpu)} | {cpu:.2f}x "
                f"| {t.first_epoch:.2f} | {first:.2f}x | {t.total:.2f} | {t.note} |"
            )
    return "\n".join(lines)


def targets(rows: list[tuple[Workload, list[Timing]]]) -> list[str]:
    want = {"small": 10.0, "digits": 2.0, "mlp": 1.1, "cnn": 2.5, "lstm": 1.2}
    out = []
    for w, timings in rows:
        keras_t = next(t for t in timings if t.name.startswith("Keras"))
        head = timings[0]
        ratio = head.samples_per_s / keras_t.samples_per_s
        ok_speed = ratio >= want[w.key]
        ok_first = head.first_epoch <= keras_t.first_epoch
        out.append(
            f"- {w.key}: throughput {ratio:.2f}x Keras (target >= {want[w.key]}x): "
            f"{'met' if ok_speed else 'MISSED'}; first epoch {head.first_epoch:.2f}s "
            f"vs Keras {keras_t.first_epoch:.2f}s: {'met' if ok_first else 'MISSED'}"
        )
        torch_t = next((t for t in timings if t.name.startswith("PyTorch")), None)
        if torch_t is not None:
            vs = head.samples_per_s / torch_t.samples_per_s
            goal = " (target: faster)" if w.key == "cnn" else ""
            verdict = ("met" if vs > 1 else "MISSED") if w.key == "cnn" else "for the record"
            out.append(f"  - vs PyTorch (eager): {vs:.2f}x{goal}: {verdict}")
        for t in timings[1:]:
            if t.name.startswith("nnrun train()"):   # --cpu-devices: the N-device run
                ratio = t.samples_per_s / keras_t.samples_per_s
                line = f"  - {t.name}: {ratio:.2f}x Keras"
                if torch_t is not None:
                    line += f", {t.samples_per_s / torch_t.samples_per_s:.2f}x PyTorch (eager)"
                out.append(line + ": for the record")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("small", "digits", "mlp", "cnn", "lstm"),
                        help="one workload; cnn and lstm (issue 3) run only when named")
    parser.add_argument(
        "--quick", action="store_true", help="fewer MLP epochs (2) for a fast check"
    )
    parser.add_argument("--epochs-mlp", type=int, default=None)
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="run each runner N times (each cold) and keep the best "
        "steady-state and the best first-epoch time (default 2, "
        "1 with --quick)",
    )
    parser.add_argument("--best", action="store_true",
                        help="keep the best of the repeats (default: their median)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON (per workload and runner: "
                             "samples/s, CPU s/epoch, first epoch, total) for tracking")
    parser.add_argument("--cpu-devices", type=int, default=1, metavar="N",
                        help="JAX's CPU backend as N devices, and a runner 'nnrun train() "
                             "N devices' (fit.devices: N) after the first (default 1)")
    args = parser.parse_args(argv)

    # Import everything and initialise the JAX backend before any timing.
    import jax

    if args.cpu_devices > 1:   # before the backend starts, as `nnrun train` does
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    import jax.numpy as jnp
    import keras  # noqa: F401

    import nnrun.api  # noqa: F401
    import nnrun.runs.report  # noqa: F401
    import nnrun.train.checkpoint  # noqa: F401
    import nnrun.train.epoch  # noqa: F401

    # No persistent compilation cache for anyone: first epochs include a real compile.
    jax.config.update("jax_enable_compilation_cache", False)
    jnp.ones(4).block_until_ready()

    print("## Machine\n")
    print("\n".join(machine_info()))
    print(f"- command: python {' '.join([sys.argv[0], *(argv or sys.argv[1:])])}\n", flush=True)

    mlp_epochs = args.epochs_mlp or (2 if args.quick else 3)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnrun-bench-") as tmp:
        workdir = Path(tmp)
        builders = {
            "small": lambda: small_workload(workdir),
            "digits": lambda: digits_workload(workdir),
            "mlp": lambda: mlp_workload(workdir, mlp_epochs),
            "cnn": lambda: cnn_workload(workdir, mlp_epochs),
            "lstm": lambda: lstm_workload(workdir, mlp_epochs),
        }
        for key in ("small", "digits", "mlp", "cnn", "lstm"):
            if key in ("digits", "cnn", "lstm") and args.only != key:
                continue
            if args.only and args.only != key:
                continue
            w = builders[key]()
            print(
                f"running {w.title} (load average {os.getloadavg()[0]:.2f}) ...",
                file=sys.stderr,
                flush=True,
            )
            runners = (
                (time_nnrun_train, (w, workdir)),
                *(((time_nnrun_train, (w, workdir, args.cpu_devices)),)
                  if args.cpu_devices > 1 else ()),
                (time_nnrun_fitter, (w,)),
                (time_keras, (w,)),
                (time_limit, (w,)),
            )
            if key in ("small", "digits"):   # tiny models: where Keras's per-step cost shows
                runners += ((time_keras, (w, -(-len(w.x) // w.batch_size))),)
            if w.torch_model is not None:
                if _torch_available():
                    runners += ((time_torch, (w,)),)
                else:
                    print("  (torch is not installed: no PyTorch row; pip install "
                          "torch==2.13.0)", file=sys.stderr)
            best: list[Timing | None] = [None] * len(runners)
            runs: list[list[Timing]] = [[] for _ in runners]
            for rep in range(args.repeat):
                for i, (runner, runner_args) in enumerate(runners):
                    jax.clear_caches()  # every runner starts cold: no program compiled before
                    t = runner(*runner_args)
                    if t is None:   # the hand-written limit covers Dense/Dropout only
                        continue
                    print(
                        f"  [{rep + 1}/{args.repeat}] {t.name}: {t.samples_per_s:,.0f} "
                        f"samples/s, first epoch {t.first_epoch:.2f}s",
                        file=sys.stderr,
                        flush=True,
                    )
                    runs[i].append(t)
                    if args.best:
                        best[i] = t if best[i] is None else _best(best[i], t)
            if not args.best:
                best = [_median(r) if r else None for r in runs]
            rows.append((w, [t for t in best if t is not None]))

    print("## Results\n")
    print(table(rows))
    load = os.getloadavg()
    stat = "best" if args.best else f"median of {args.repeat}"
    print(
        f"\nload average (1/5/15 min) at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}. "
        f"samples/s and first epoch: {stat} of the repeats (wall clock); CPU s/epoch: "
        f"process CPU time (all threads) per steady epoch, {stat} of the repeats.\n"
    )
    print("## Targets (headline: nnrun train())\n")
    print("\n".join(targets(rows)))
    if args.json is not None:
        import json

        args.json.write_text(json.dumps({
            "machine": machine_info(), "load_at_end": list(load),
            "workloads": [{"key": w.key, "title": w.title, "runners": [
                {"name": t.name, "samples_per_s": t.samples_per_s,
                 "cpu_s_per_epoch": t.steady_cpu, "first_epoch_s": t.first_epoch,
                 "total_s": t.total, "note": t.note} for t in timings]}
                for w, timings in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
