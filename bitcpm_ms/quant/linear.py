"""TernaryLinear: MindFormers' `Linear` with its weight fake-quantized on the fly.

A drop-in replacement: same constructor arguments (plus `quant_config`), same parameter names
(`weight`, `bias`) so checkpoints map 1:1, same `shard()` signature. The latent full-precision
weight is what is stored and trained; the forward uses the quantized weight (and optionally
per-token quantized activations); the backward is the straight-through estimator.
"""
from mindspore import dtype as mstype
from mindspore.ops import functional as F
from mindspore.ops import operations as P
from mindformers.modules.layers import Linear

from .cells import ActFakeQuant, WeightFakeQuant
from .config import QuantConfig


class TernaryLinear(Linear):
    """Quantization-aware Linear. With `quant_config.enabled=False` it is exactly `Linear`.

    Only the dense layout of MindFormers' Linear is supported (transpose_b=True, weight
    [out, in], expert_num=1): groups run along the input dimension of each output row.
    """

    def __init__(self, in_channels, out_channels, init_method_std=0.01, weight_init='normal',
                 bias_init='zeros', has_bias=True, activation=None, transpose_b=True, expert_num=1,
                 outer_batch=1, expert_group_size=None, use_gmm=False, param_init_type=mstype.float32,
                 compute_dtype=mstype.float16, quant_config: QuantConfig = None):
        if not transpose_b or expert_num != 1 or use_gmm:
            raise ValueError("TernaryLinear supports the dense [out, in] weight layout only "
                             f"(transpose_b=True, expert_num=1, use_gmm=False); got transpose_b={transpose_b}, "
                             f"expert_num={expert_num}, use_gmm={use_gmm}")
        super().__init__(in_channels, out_channels, init_method_std=init_method_std, weight_init=weight_init,
                         bias_init=bias_init, has_bias=has_bias, activation=activation, transpose_b=True,
                         param_init_type=param_init_type, compute_dtype=compute_dtype)
        self.quant_config = quant_config if quant_config is not None else QuantConfig()
        cfg = self.quant_config
        self.quant_weights = cfg.enabled
        self.quant_acts = cfg.enabled and cfg.act_bits is not None
        self.group_size = cfg.group_for(in_channels) if cfg.enabled else None
        if self.quant_weights:
            self.weight_quantizer = WeightFakeQuant(cfg.quant_space, self.group_size, cfg.eps, cfg.fused_cpu_kernel)
            # The weight's first user: a plain Reshape to the grouped view, sharded like the weight,
            # so semi-auto parallel puts the gradient mirror / parameter layout on it and not inside
            # the quantizer's custom-bprop Cell (docs/distributed.md, "Gradient communication of
            # the quantized weights").
            self.weight_view = P.Reshape()
            self.weight_unview = P.Reshape()
        if self.quant_acts:
            self.act_quantizer = ActFakeQuant(cfg.act_bits, cfg.eps)

    @classmethod
    def from_linear(cls, linear: Linear, quant_config: QuantConfig) -> "TernaryLinear":
        """Wrap an existing Linear, taking over its Parameters and its (possibly sharded) primitives.

        Reusing the primitives keeps every parallel strategy MindFormers set on them; reusing the
        Parameters keeps their values and checkpoint names.
        """
        if getattr(linear, "expert_flag", False) or getattr(linear, "use_gmm", False) or not linear.transpose_b:
            raise ValueError(f"cannot quantize {type(linear).__name__}: only dense Linear layers with "
                             "transpose_b=True are supported")
        new = cls(linear.in_channels, linear.out_channels, has_bias=linear.has_bias,
                  weight_init="zeros", param_init_type=linear.param_init_type,
                  compute_dtype=linear.dtype, quant_config=quant_config)
        new.weight = linear.weight
        new.matmul = linear.matmul
        if linear.has_bias:
            new.bias = linear.bias
            new.bias_add = linear.bias_add
        new.activation, new.activation_flag, new.act_name = linear.activation, linear.activation_flag, linear.act_name
        strategy = in_strategy(linear.matmul)
        if strategy is not None:
            new._shard_quantizers(strategy)
        return new

    def construct(self, x, group_list=None):
        out_shape = self.shape(x)[:-1] + (self.out_channels,)
        x = self.reshape(x, (-1, self.in_channels))                 # [tokens, in]
        ori_dtype = F.dtype(x)
        weight = self.weight
        if self.quant_weights:                                      # in the master dtype
            if self.weight_quantizer.fused:                         # CPU: one fused op on [out, in]
                weight = self.weight_quantizer(weight)
            else:
                groups = (self.out_channels, self.in_channels // self.group_size, self.group_size)
                weight = self.weight_view(weight, groups)           # [out, in/g, g]
                weight = self.weight_unview(self.weight_quantizer(weight), (self.out_channels, self.in_channels))
        weight = self.cast(weight, self.dtype)
        x = self.cast(x, self.dtype)
        if self.quant_acts:
            x = self.act_quantizer(x)
        x = self.matmul(x, weight)                                  # [tokens, out]
        if self.has_bias:
            x = self.bias_add(x, self.cast(self.bias, self.dtype))
        if self.activation_flag:
            x = self.activation(x)
        x = F.cast(x, ori_dtype)
        return self.reshape(x, out_shape)

    def shard(self, strategy_matmul, strategy_bias=None, strategy_activation=None, out_strategy_matmul=None,
              enable_nd_tp=False):
        """Linear.shard, plus strategies for the quantizers derived from the matmul's."""
        super().shard(strategy_matmul, strategy_bias, strategy_activation, out_strategy_matmul, enable_nd_tp)
        self._shard_quantizers(strategy_matmul)
        return self

    def _shard_quantizers(self, strategy_matmul):
        act_strategy, weight_strategy = strategy_matmul
        if self.quant_weights:
            self.weight_view.shard((tuple(weight_strategy),))
            self.weight_quantizer.shard(weight_strategy)
        if self.quant_acts:
            self.act_quantizer.shard(act_strategy)

    def extend_repr(self):
        c = self.quant_config
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, has_bias={self.has_bias}, "
                f"enabled={c.enabled}, quant_space={c.quant_space}, group_size={self.group_size}, "
                f"act_bits={c.act_bits}")


def in_strategy(prim):
    """The input strategy set on a primitive by `shard()`, or None if it has none."""
    strategy = prim.attrs.get("in_strategy") if hasattr(prim, "attrs") else None
    return tuple(tuple(s) for s in strategy) if strategy else None
