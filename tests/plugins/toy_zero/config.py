"""The toy method's parameters: the single source the compiler checks policies against."""

from gatelang.methods import MethodConfig, param


class ToyZeroConfig(MethodConfig):
    layer: int = param(0, "decoder layer whose units are zeroed", ge=0, le=1000)
    units: int = param(1, "how many of the layer's first MLP units to zero", ge=1, le=100000)
