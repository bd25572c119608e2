"""Parameter and FLOP accounting from a model config (no network needed).

Used for the TFLOP/s log line, for checking that the production YAMLs are the size their name
says, and by benchmarks. The formulas are stated here so logged numbers can be checked by hand.
"""
from dataclasses import dataclass

from ..layout import config_get as _get, projection_shapes


@dataclass
class ParamCount:
    embedding: int        # vocab x hidden lookup table
    per_layer_linear: int  # q, k, v, o, gate, up, down
    per_layer_norm: int
    num_layers: int
    final_norm: int
    lm_head: int          # 0 when tied to the embedding

    @property
    def linear(self) -> int:
        """Weights of the quantizable projections (all layers)."""
        return self.per_layer_linear * self.num_layers

    @property
    def total(self) -> int:
        return (self.embedding + (self.per_layer_linear + self.per_layer_norm) * self.num_layers
                + self.final_norm + self.lm_head)

    @property
    def matmul(self) -> int:
        """Parameters that take part in a matmul per token: every linear plus the head
        (the head of a tied model still multiplies by the embedding table)."""
        return self.linear + (self.lm_head or self.embedding)


def count_params(cfg) -> ParamCount:
    """Parameter count of a BitCPM / LLaMA config (dict or config object)."""
    h = int(_get(cfg, "hidden_size"))
    vocab = int(_get(cfg, "vocab_size"))
    layers = int(_get(cfg, "num_layers"))
    shapes = projection_shapes(cfg)
    linear = sum(out_f * in_f for out_f, in_f in shapes.values())
    if bool(_get(cfg, "qkv_has_bias", False)):
        linear += sum(shapes[n][0] for n in ("attention.wq", "attention.wk", "attention.wv"))
    tied = bool(_get(cfg, "tie_word_embeddings", False))
    return ParamCount(embedding=vocab * h, per_layer_linear=linear, per_layer_norm=2 * h,
                      num_layers=layers, final_norm=h, lm_head=0 if tied else vocab * h)


def train_flops_per_token(cfg, seq_length: int = None) -> float:
    """Model FLOPs per trained token, PaLM appendix B: 6 * N_matmul + 12 * L * H * S.

    N_matmul: parameters used in matmuls (linears + head); 6 = 2 (multiply-add) x 3 (forward,
    backward for activations, backward for weights). 12 * L * H * S: attention scores and
    weighted values (2 matmuls x 2 FLOPs x 3 passes) over the full S x S square, as the
    usual MFU convention counts them. Quantizer element-wise work is not counted (it is
    overhead, not model FLOPs).
    """
    s = int(seq_length or _get(cfg, "seq_length"))
    pc = count_params(cfg)
    return 6.0 * pc.matmul + 12.0 * pc.num_layers * int(_get(cfg, "hidden_size")) * s
