"""Layer argument schemas: Keras 3 names, defaults, types and Keras 1 aliases.

Jax-free, so that loading and checking a config stays fast. The layer
implementations in `nnrun.nn.layers` register under the same names; a test
checks that the two agree. The argument checkers (`positive_int`, `rate`,
`one_of`...) are in nnrun/config/values.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nnrun.config.values import (
    REQUIRED,
    Checker,
    axes,
    boolean,
    channels_last,
    dot_axes,
    int_list,
    integer,
    named,
    nested_graph,
    nested_layer,
    nested_layers,
    noise_shape,
    non_negative_number,
    number,
    one_of,
    optional,
    pairs,
    positive_int,
    rate,
    sizes,
    string,
)

# A layer's named objects: a name, or a mapping: one key as a layer is written
# (`{l2: 0.01}`, `{RandomNormal: {stddev: 0.05}}`), `{name: l2, l2: 0.01}`, or Keras's
# `{class_name: L2, config: {l2: 0.01}}` (nnrun/config/values.py: named_parts).
ACTIVATION, INITIALIZER, REGULARIZER, CONSTRAINT = (
    named(kind) for kind in ("activation", "initializer", "regularizer", "constraint"))


@dataclass(frozen=True)
class Arg:
    """One layer argument: Keras 3 name, type checker, default (or REQUIRED)."""

    name: str
    check: Checker
    default: Any = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def weight_options(*weights: str) -> tuple[Arg, ...]:
    """`<weight>_regularizer` and `<weight>_constraint` for each named weight, and the
    layer's `activity_regularizer` (on its output)."""
    return tuple(Arg(f"{w}_{kind}", optional(check), None) for w in weights
                 for kind, check in (("regularizer", REGULARIZER),
                                     ("constraint", CONSTRAINT))) + (
        Arg("activity_regularizer", optional(REGULARIZER), None),)


@dataclass(frozen=True)
class LayerSchema:
    """The arguments of one layer type, in Keras's positional order."""

    args: tuple[Arg, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    doc: str = ""

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    def names(self) -> list[str]:
        return [a.name for a in self.args]


# Arguments accepted by every layer: Keras's `name` and `trainable` (false: frozen),
# Keras 1's `weights` (initial arrays, get_weights() order), and the input-shape
# arguments that may stand on a Sequential model's first layer.
COMMON_ARGS = ("name", "trainable", "weights", "input_shape", "input_dim", "input_length",
               "batch_input_shape")

# Keras 1 argument names that mean the same on every layer.
COMMON_ALIASES = {
    "init": "kernel_initializer",
    "output_dim": "units",
    "bias": "use_bias",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
}

# Keras 1 layer type names.
TYPE_ALIASES: dict[str, str] = {
    "Convolution1D": "Conv1D", "Convolution2D": "Conv2D", "Convolution3D": "Conv3D",
    "AtrousConvolution1D": "Conv1D", "AtrousConvolution2D": "Conv2D",
    "Deconvolution2D": "Conv2DTranspose", "Deconvolution3D": "Conv3DTranspose",
    "SeparableConvolution2D": "SeparableConv2D"}

# Keras 1 names of the convolutions' arguments (Convolution2D's nb_row/nb_col and
# Convolution3D's kernel_dim1..3 are gathered into kernel_size by the spec).
CONV_ALIASES = {"nb_filter": "filters", "filter_length": "kernel_size",
                "border_mode": "padding", "subsample_length": "strides",
                "subsample": "strides", "atrous_rate": "dilation_rate",
                "dim_ordering": "data_format"}


def _conv_args(rank: int, *, causal: bool = False) -> tuple[Arg, ...]:
    """strides, padding, data_format, dilation_rate, activation, use_bias (Keras's order)."""
    return (Arg("strides", sizes(rank), (1,) * rank),
            Arg("padding", one_of("valid", "same", *(("causal",) if causal else ())), "valid"),
            Arg("data_format", channels_last, "channels_last"),
            Arg("dilation_rate", sizes(rank), (1,) * rank),
            Arg("activation", optional(ACTIVATION), None), Arg("use_bias", boolean, True))

LAYERS: dict[str, LayerSchema] = {
    "Dense": LayerSchema(
        args=(
            Arg("units", positive_int, REQUIRED),
            Arg("activation", optional(ACTIVATION), None),
            Arg("use_bias", boolean, True),
            Arg("kernel_initializer", INITIALIZER, "glorot_uniform"),
            Arg("bias_initializer", INITIALIZER, "zeros"),
            *weight_options("kernel", "bias"),
        ),
        doc="Fully connected layer: y = activation(x @ kernel + bias) on the last axis.",
    ),
    "Activation": LayerSchema(
        args=(Arg("activation", ACTIVATION, REQUIRED),),
        doc="Applies an activation function by name.",
    ),
    "Dropout": LayerSchema(
        args=(
            Arg("rate", rate, REQUIRED),
            Arg("noise_shape", optional(noise_shape), None),
            Arg("seed", optional(integer), None),
        ),
        aliases={"p": "rate"},
        doc="Sets a fraction `rate` of inputs to zero in training, scaling the rest by 1/(1-rate).",
    ),
    "Flatten": LayerSchema(args=(), doc="Flattens all axes but the batch axis."),
    # Advanced activations as layers (Keras 3, and two of Keras 1's).
    "LeakyReLU": LayerSchema(args=(Arg("negative_slope", non_negative_number, 0.3),),
                             aliases={"alpha": "negative_slope"},
                             doc="x for x >= 0, negative_slope * x otherwise."),
    "PReLU": LayerSchema(args=(Arg("alpha_initializer", INITIALIZER, "zeros"),
                               *weight_options("alpha"),
                               Arg("shared_axes", optional(int_list), None)),
                         aliases={"init": "alpha_initializer"},
                         doc="Leaky ReLU with a learned slope per unit (shared along "
                             "`shared_axes`, 1-based as Keras)."),
    "ELU": LayerSchema(args=(Arg("alpha", number, 1.0),), doc="x, or alpha*(exp(x)-1) below 0."),
    "ThresholdedReLU": LayerSchema(args=(Arg("theta", number, 1.0),),
                                   doc="x where x > theta, else 0 (Keras 2)."),
    "ReLU": LayerSchema(args=(Arg("max_value", optional(non_negative_number), None),
                              Arg("negative_slope", non_negative_number, 0.0),
                              Arg("threshold", non_negative_number, 0.0)),
                        doc="Keras 3 ReLU with max_value, negative_slope and threshold."),
    "Softmax": LayerSchema(args=(Arg("axis", integer, -1),), doc="Softmax along `axis`."),
    "ParametricSoftplus": LayerSchema(
        args=(Arg("alpha_init", number, 0.2), Arg("beta_init", number, 5.0)),
        doc="alpha * softplus(beta * x) with alpha and beta learned per unit (Keras 1)."),
    "ThresholdedLinear": LayerSchema(args=(Arg("theta", number, 1.0),),
                                     doc="x where |x| >= theta, else 0 (Keras 1)."),
    "Embedding": LayerSchema(
        args=(Arg("input_dim", positive_int, REQUIRED), Arg("output_dim", positive_int, REQUIRED),
              Arg("embeddings_initializer", INITIALIZER, "uniform"),
              *weight_options("embeddings"), Arg("mask_zero", boolean, False)),
        aliases={"init": "embeddings_initializer", "W_regularizer": "embeddings_regularizer",
                 "W_constraint": "embeddings_constraint"},
        doc="Token ids (integers in [0, input_dim)) -> vectors of size output_dim. A first "
            "layer's `input_length` gives the input shape; the model input is int32. With "
            "`mask_zero`, id 0 is padding: the recurrent layers after skip those steps."),
    "Masking": LayerSchema(
        args=(Arg("mask_value", number, 0.0),),
        doc="Masks the time steps whose features all equal mask_value (set to 0): the "
            "recurrent layers after skip them."),
    # Recurrent layers (lax.scan over time; batch, steps, features in).
    **{name: LayerSchema(
        args=(Arg("units", positive_int, REQUIRED),
              Arg("activation", ACTIVATION, "tanh"),
              *((Arg("recurrent_activation", ACTIVATION, "sigmoid"),) if name != "SimpleRNN"
                else ()),
              Arg("use_bias", boolean, True),
              Arg("kernel_initializer", INITIALIZER, "glorot_uniform"),
              Arg("recurrent_initializer", INITIALIZER, "orthogonal"),
              Arg("bias_initializer", INITIALIZER, "zeros"),
              *((Arg("unit_forget_bias", boolean, True),) if name == "LSTM" else ()),
              *((Arg("reset_after", boolean, True),) if name == "GRU" else ()),
              *weight_options("kernel", "recurrent", "bias"),
              Arg("dropout", rate, 0.0), Arg("recurrent_dropout", rate, 0.0),
              Arg("return_sequences", boolean, False), Arg("return_state", boolean, False),
              Arg("go_backwards", boolean, False), Arg("stateful", boolean, False),
              Arg("unroll", boolean, False),
              Arg("consume_less", optional(string), None)),
        aliases={"inner_init": "recurrent_initializer", "inner_activation": "recurrent_activation",
                 "U_regularizer": "recurrent_regularizer", "U_constraint": "recurrent_constraint",
                 "dropout_W": "dropout", "dropout_U": "recurrent_dropout"},
        doc=f"Keras 3 {name} (a lax.scan over time; `unroll` unrolls it); Keras 1's "
            "`consume_less` is accepted and has no effect. `stateful`: each batch starts from "
            "the states the previous one ended with (batch size fit.batch_size), reset at "
            "each epoch and before evaluate / predict.")
      for name in ("SimpleRNN", "LSTM", "GRU")},
    # Convolution and pooling (channels last).
    **{f"Conv{r}D": LayerSchema(
        args=(Arg("filters", positive_int, REQUIRED), Arg("kernel_size", sizes(r), REQUIRED),
              *_conv_args(r, causal=r == 1),
              Arg("kernel_initializer", INITIALIZER, "glorot_uniform"),
              Arg("bias_initializer", INITIALIZER, "zeros"),
              *weight_options("kernel", "bias")),
        aliases=CONV_ALIASES,
        doc=f"{r}-D convolution, kernel (*kernel_size, in, filters) as Keras (HWIO).")
      for r in (1, 2, 3)},
    **{f"Conv{r}DTranspose": LayerSchema(
        args=(Arg("filters", positive_int, REQUIRED), Arg("kernel_size", sizes(r), REQUIRED),
              Arg("strides", sizes(r), (1,) * r),
              Arg("padding", one_of("valid", "same"), "valid"),
              Arg("output_padding", optional(sizes(r, zero=True)), None),
              *_conv_args(r)[2:],
              Arg("kernel_initializer", INITIALIZER, "glorot_uniform"),
              Arg("bias_initializer", INITIALIZER, "zeros"),
              *weight_options("kernel", "bias")),
        aliases=CONV_ALIASES,
        doc=f"{r}-D transposed convolution (the gradient of Conv{r}D: upsamples by `strides`), "
            "kernel (*kernel_size, filters, in) as Keras.")
      for r in (1, 2, 3)},
    **{f"DepthwiseConv{r}D": LayerSchema(
        args=(Arg("kernel_size", sizes(r), REQUIRED), *_conv_args(r)[:2],
              Arg("depth_multiplier", positive_int, 1), *_conv_args(r)[2:],
              Arg("depthwise_initializer", INITIALIZER, "glorot_uniform"),
              Arg("bias_initializer", INITIALIZER, "zeros"),
              *weight_options("depthwise", "bias")),
        aliases={**CONV_ALIASES, "init": "depthwise_initializer"},
        doc=f"{r}-D depthwise convolution: each input channel convolved with its own "
            "`depth_multiplier` filters; kernel (*kernel_size, in, depth_multiplier).")
      for r in (1, 2)},
    **{f"SeparableConv{r}D": LayerSchema(
        args=(Arg("filters", positive_int, REQUIRED), Arg("kernel_size", sizes(r), REQUIRED),
              *_conv_args(r)[:2], Arg("depth_multiplier", positive_int, 1),
              *_conv_args(r)[2:],
              Arg("depthwise_initializer", INITIALIZER, "glorot_uniform"),
              Arg("pointwise_initializer", INITIALIZER, "glorot_uniform"),
              Arg("bias_initializer", INITIALIZER, "zeros"),
              *weight_options("depthwise", "pointwise", "bias")),
        aliases={**CONV_ALIASES, "init": "depthwise_initializer"},
        doc=f"{r}-D depthwise convolution followed by a pointwise (1x1) one to `filters`.")
      for r in (1, 2)},
    **{f"{kind}Pooling{r}D": LayerSchema(
        args=(Arg("pool_size", sizes(r), (2,) * r), Arg("strides", optional(sizes(r)), None),
              Arg("padding", one_of("valid", "same"), "valid"),
              Arg("data_format", channels_last, "channels_last")),
        aliases={"pool_length": "pool_size", "stride": "strides", "border_mode": "padding",
                 "dim_ordering": "data_format"},
        doc=f"{kind} over windows; 'same' averages only the cells inside the input.")
      for r in (1, 2) for kind in ("Max", "Average")},
    **{f"Global{kind}Pooling{r}D": LayerSchema(
        args=(Arg("data_format", channels_last, "channels_last"), Arg("keepdims", boolean, False)),
        aliases={"dim_ordering": "data_format"},
        doc=f"{kind} over the spatial axes.")
      for r in (1, 2) for kind in ("Max", "Average")},
    # Merge layers (graph models): a list of inputs.
    **{name: LayerSchema(args=(), doc=doc) for name, doc in (
        ("Add", "Elementwise sum of the inputs."),
        ("Subtract", "The first input minus the second."),
        ("Multiply", "Elementwise product of the inputs."),
        ("Average", "Elementwise mean of the inputs."),
        ("Maximum", "Elementwise maximum of the inputs."),
        ("Minimum", "Elementwise minimum of the inputs."))},
    "Concatenate": LayerSchema(args=(Arg("axis", integer, -1),),
                               aliases={"concat_axis": "axis"},
                               doc="Joins the inputs along `axis` (batch axis = 0)."),
    "Dot": LayerSchema(args=(Arg("axes", dot_axes, REQUIRED), Arg("normalize", boolean, False)),
                       aliases={"dot_axes": "axes"},
                       doc="Batch dot product of two inputs over `axes`; `normalize` gives "
                           "the cosine similarity."),
    # A nested model: a Sequential stack used as one layer (the notes' encoder/decoder).
    "Sequential": LayerSchema(args=(Arg("layers", nested_layers, REQUIRED),),
                              doc="A Sequential stack of layers used as one layer (a nested "
                                  "model, e.g. an autoencoder's encoder)."),
    "Model": LayerSchema(args=(Arg("graph", nested_graph, REQUIRED),),
                         doc="A graph model ({inputs, layers, outputs}) used as one layer; "
                             "the layer's inputs feed the graph's inputs in order."),
    # A shared layer: another layer's weights applied again (a siamese network).
    "Reuse": LayerSchema(args=(Arg("layer", string, REQUIRED),),
                         doc="Applies the layer named `layer` again, with the same weights."),
    # Wrappers.
    "Bidirectional": LayerSchema(
        args=(Arg("layer", nested_layer, REQUIRED),
              Arg("merge_mode", one_of("concat", "sum", "mul", "ave"), "concat")),
        doc="Runs a recurrent layer forwards and backwards and merges the two outputs."),
    "TimeDistributed": LayerSchema(
        args=(Arg("layer", nested_layer, REQUIRED),),
        doc="Applies a layer to every time step (axis 1) of its input."),
    # Normalization.
    "BatchNormalization": LayerSchema(
        args=(Arg("axis", integer, -1), Arg("momentum", rate, 0.99),
              Arg("epsilon", number, 1e-3), Arg("center", boolean, True),
              Arg("scale", boolean, True), Arg("beta_initializer", INITIALIZER, "zeros"),
              Arg("gamma_initializer", INITIALIZER, "ones"),
              Arg("moving_mean_initializer", INITIALIZER, "zeros"),
              Arg("moving_variance_initializer", INITIALIZER, "ones"),
              *weight_options("beta", "gamma")),
        doc="Normalizes with the batch's statistics in training (padded rows excluded) and "
            "the moving ones in inference; the moving statistics are non-trainable state."),
    "LayerNormalization": LayerSchema(
        args=(Arg("axis", axes, (-1,)), Arg("epsilon", number, 1e-3),
              Arg("center", boolean, True), Arg("scale", boolean, True),
              Arg("beta_initializer", INITIALIZER, "zeros"),
              Arg("gamma_initializer", INITIALIZER, "ones"),
              *weight_options("beta", "gamma")),
        doc="Normalizes each sample over `axis`, then gamma * x + beta."),
    # Noise and dropout variants: active in training only.
    "GaussianNoise": LayerSchema(args=(Arg("stddev", number, REQUIRED),
                                       Arg("seed", optional(integer), None)),
                                 aliases={"sigma": "stddev"},
                                 doc="Adds N(0, stddev^2) noise in training."),
    "GaussianDropout": LayerSchema(args=(Arg("rate", rate, REQUIRED),
                                         Arg("seed", optional(integer), None)),
                                   aliases={"p": "rate"},
                                   doc="Multiplies by N(1, rate/(1-rate)) noise in training."),
    "AlphaDropout": LayerSchema(args=(Arg("rate", rate, REQUIRED),
                                      Arg("noise_shape", optional(noise_shape), None),
                                      Arg("seed", optional(integer), None)),
                                aliases={"p": "rate"},
                                doc="Dropout that keeps SELU's mean and variance."),
    "SpatialDropout1D": LayerSchema(args=(Arg("rate", rate, REQUIRED),
                                          Arg("seed", optional(integer), None)),
                                    aliases={"p": "rate"},
                                    doc="Drops whole channels of (batch, steps, channels)."),
    "SpatialDropout2D": LayerSchema(args=(Arg("rate", rate, REQUIRED),
                                          Arg("seed", optional(integer), None)),
                                    aliases={"p": "rate"},
                                    doc="Drops whole channels of (batch, rows, cols, channels)."),
    # Shape layers.
    "Reshape": LayerSchema(args=(Arg("target_shape", int_list, REQUIRED),),
                           aliases={"dims": "target_shape"},
                           doc="Reshapes all axes but the batch axis; one entry may be -1."),
    "Permute": LayerSchema(args=(Arg("dims", int_list, REQUIRED),),
                           doc="Permutes the non-batch axes; `dims` is 1-based as Keras."),
    "RepeatVector": LayerSchema(args=(Arg("n", positive_int, REQUIRED),),
                                doc="(batch, features) -> (batch, n, features)."),
    "Cropping1D": LayerSchema(args=(Arg("cropping", pairs(1), ((1, 1),)),),
                              doc="Crops the time axis: (before, after)."),
    "Cropping2D": LayerSchema(args=(Arg("cropping", pairs(2), ((0, 0), (0, 0))),),
                              doc="Crops rows and columns: ((top, bottom), (left, right))."),
    "ZeroPadding1D": LayerSchema(args=(Arg("padding", pairs(1), ((1, 1),)),),
                                 doc="Pads the time axis with zeros."),
    "ZeroPadding2D": LayerSchema(args=(Arg("padding", pairs(2), ((1, 1), (1, 1))),),
                                 doc="Pads rows and columns with zeros."),
    "UpSampling1D": LayerSchema(args=(Arg("size", positive_int, 2),),
                                aliases={"length": "size"},
                                doc="Repeats each time step `size` times."),
    "UpSampling2D": LayerSchema(args=(Arg("size", sizes(2), (2, 2)),
                                      Arg("interpolation", one_of("nearest", "bilinear"),
                                          "nearest")),
                                doc="Enlarges rows and columns by `size`."),
}


def canonical_type(name: str) -> str:
    return TYPE_ALIASES.get(name, name)
