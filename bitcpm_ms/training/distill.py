"""Distillation in the training step: a student BitCPMForCausalLM with a frozen teacher beside it.

`BitCPMDistillForCausalLM` *is* the student (a BitCPMForCausalLM subclass, so its parameter names,
checkpoints, FLOP accounting and MindFormers' Trainer handling are the plain model's). In training
its forward also runs the teacher on the same tokens, inside the same graph-mode step, and returns

    loss = (1 - alpha) * CE(student, labels) + alpha * KD(student, teacher)     (kd_loss.py)

The teacher and the two logged loss terms are held *outside the Cell tree* (attributes set with
`object.__setattr__`). Graph mode still compiles and runs them (their Parameters are graph
inputs), but `get_parameters()` / `trainable_params()` never see them, so:
  * the optimizer, the gradient and the data-parallel all-reduce cover the student only;
  * the checkpoint callback (BitCPMCheckpointMonitor saves the train network's parameters) writes a plain
    student checkpoint: the teacher is not saved, and resume / eval / export load it as any other;
  * the teacher's weights cannot change (requires_grad False, not in any optimizer, and its logits
    pass through `ops.stop_gradient`).
The teacher's parameter names get a `teacher.` prefix so no name is shared with the student's.

With document masking (`use_eod_attn_mask_compression` and the `actual_seq_len` column) the
teacher runs on the same documents as the student: the same ends, its own positions and mask
(models/documents.py), and the KD term is masked where the CE term is (labels that start another
document). Outside training (`set_train(False)`), the forward is the plain student's.
"""
import numpy as np
from mindspore import Parameter, Tensor, ops
from mindspore.common import dtype as mstype

from ..models import BitCPMForCausalLM
from .kd_loss import distill_loss_cell

TEACHER_PREFIX = "teacher."


def _outside_cell_tree(cell, name, value):
    """Attach `value` to `cell` without registering it as a sub-cell or parameter."""
    object.__setattr__(cell, name, value)


class BitCPMDistillForCausalLM(BitCPMForCausalLM):
    """Student + frozen teacher; see the module docstring. Built by `app/train_network.py` and handed
    to MindFormers' `Trainer(model=...)` (it needs a built teacher, so it is not a YAML `arch` type).

    Args:
        config: the student's BitCPMConfig (QAT or not).
        teacher: a built BitCPMForCausalLM with its weights loaded, same vocabulary as the student.
        temperature: KD temperature T (> 0).
        alpha: weight of the KD term in [0, 1]; 0 is plain cross-entropy (the teacher is not run,
            nothing extra is logged).
    """

    def __init__(self, config, teacher: BitCPMForCausalLM, temperature: float = 1.0, alpha: float = 0.5):
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"distill alpha must be in [0, 1], got {alpha}")
        if int(teacher.config.vocab_size) != int(config.vocab_size):
            raise ValueError(f"teacher vocab_size {teacher.config.vocab_size} != student vocab_size "
                             f"{config.vocab_size}")
        if bool(getattr(teacher, "document_mask", False)) != bool(getattr(config, "use_eod_attn_mask_compression",
                                                                          False)):
            raise ValueError("the teacher and the student must both mask documents (use_eod_attn_mask_compression) "
                             "or neither: the teacher reads the student's documents")
        super().__init__(config=config)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.distill_loss = distill_loss_cell(temperature, alpha, getattr(config, "cpu_fused_ops", None))
        self.vocab = int(config.vocab_size)
        for p in teacher.get_parameters():
            p.requires_grad = False
            if not p.name.startswith(TEACHER_PREFIX):
                p.name = TEACHER_PREFIX + p.name
        teacher.set_train(True)             # the same forward path (no KV cache) as the student's
        _outside_cell_tree(self, "teacher", teacher)
        _outside_cell_tree(self, "ce_value", Parameter(Tensor(np.float32(0)), name="distill.ce", requires_grad=False))
        _outside_cell_tree(self, "kd_value", Parameter(Tensor(np.float32(0)), name="distill.kd", requires_grad=False))

    def loss_terms(self) -> dict:
        """The CE and KD terms of the last training step (read by the metrics callback)."""
        if self.alpha == 0.0:
            return {}
        return {"ce_loss": float(self.ce_value.asnumpy()), "kd_loss": float(self.kd_value.asnumpy())}

    def construct(self, input_ids, labels=None, input_position=None, position_ids=None, attention_mask=None,
                  input_embeds=None, init_reset=None, batch_valid_length=None, batch_index=None, zactivate_len=None,
                  block_tables=None, slot_mapping=None, prefix_keys_values=None, llm_boost_inputs=None,
                  q_seq_lens=None, loss_mask=None, gather_index=None, seq_range=None, actual_seq_len=None):
        if not self.training:
            return super().construct(input_ids, labels, input_position, position_ids, attention_mask, input_embeds,
                                     init_reset, batch_valid_length, batch_index, zactivate_len, block_tables,
                                     slot_mapping, prefix_keys_values, llm_boost_inputs, q_seq_lens, loss_mask,
                                     gather_index, seq_range, actual_seq_len)
        if self.document_mask and actual_seq_len is None:
            raise ValueError("use_eod_attn_mask_compression is on but no actual_seq_len was given: feed the "
                             "dataset's actual_seq_len column (input_columns), or switch document masking off")
        # the training path of LlamaForCausalLM.construct (packed input_ids [B, S + 1], no labels given)
        bsz, seqlen = self.shape(input_ids)
        tokens = self.slice(input_ids, (0, 0), (bsz, seqlen - 1), (1, 1))          # [B, S]
        labels = self.slice(input_ids, (0, 1), (bsz, seqlen), (1, 1))              # [B, S]
        input_mask = self.cast(self.not_equal(tokens, self.pad_token_id), mstype.float32)
        if self.document_mask:       # packed documents: the teacher below reads the same documents
            hidden, keep = self.document_hidden(tokens, actual_seq_len)
            input_mask = self.mul(input_mask, keep)
        else:
            hidden = self.model(tokens)
        logits = self.lm_head(hidden)                                              # [B, S, V]
        logits = self.cast(self.reshape(logits, (-1, self.vocab)), mstype.float32)  # [B*S, V]
        labels = self.reshape(labels, (-1,))
        input_mask = self.reshape(input_mask, (-1,))
        if self.alpha == 0.0:                                                      # plain QAT
            return self.loss(logits, labels, input_mask)
        if self.document_mask:
            t_hidden = self.teacher.document_hidden(tokens, actual_seq_len)[0]
        else:
            t_hidden = self.teacher.model(tokens)
        t_logits = self.teacher.lm_head(t_hidden)                                  # [B, S, V]
        t_logits = ops.stop_gradient(self.cast(self.reshape(t_logits, (-1, self.vocab)), mstype.float32))
        loss, ce, kd = self.distill_loss(logits, t_logits, labels, input_mask)[:3]
        # the logged terms: side effects in the forward; the compiled step still runs the forward
        # once (checked on the graph: the same MatMul / Softmax count with and without them)
        loss = ops.depend(loss, ops.assign(self.ce_value, ops.stop_gradient(ce)))
        return ops.depend(loss, ops.assign(self.kd_value, ops.stop_gradient(kd)))

def loss_terms(train_network) -> dict:
    """{'ce_loss', 'kd_loss'} of the last step when the network distils, else {} (for the metrics callback)."""
    for _, cell in train_network.cells_and_names():
        if isinstance(cell, BitCPMDistillForCausalLM):
            return cell.loss_terms()
    return {}


def teacher_of(train_network):
    """The frozen teacher of a distilling network (None otherwise)."""
    for _, cell in train_network.cells_and_names():
        if isinstance(cell, BitCPMDistillForCausalLM):
            return cell.teacher
    return None


__all__ = ["BitCPMDistillForCausalLM", "loss_terms", "teacher_of", "TEACHER_PREFIX"]
