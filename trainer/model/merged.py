"""Sampling-only rewrites of the adapted transformer: the LoRA merged, and q/k/v fused.

Both exist for rollouts (``performance.merge_lora_for_rollouts`` and ``performance.fused_qkv``)
and both are undone before the update, which needs the adapter as separate trainable weights.

- :func:`lora_merged`: every adapted layer computes ``x @ (W + s B A)`` as one matmul instead of
  ``x @ W + s (x @ A) @ B`` (three matmuls plus casting the input to the float32 adapter).
  The base weights are restored by copying the kept originals back, never by subtracting the
  delta: in bf16, ``(W + d) - d != W``, and a subtraction would drift the base model (the KL
  reference) a little more every epoch.
- :func:`qkv_fused`: each joint attention layer computes its q, k, v (and the prompt stream's)
  with one matmul over the concatenated weights. diffusers' own ``fuse_qkv_projections`` is
  not used: its ``FusedJointAttnProcessor2_0`` (diffusers 0.42) skips the q/k RMS norms of
  SD3.5 (``qk_norm``) and fails on SD3.5's second attention of the dual blocks, which has no
  prompt stream. :class:`FusedQKVJointAttnProcessor` is ``JointAttnProcessor2_0`` line for
  line except for the projections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0
from peft.tuners.lora import LoraLayer

__all__ = ["FusedQKVJointAttnProcessor", "lora_merged", "qkv_fused"]


def _lora_layers(transformer: torch.nn.Module) -> list[LoraLayer]:
    layers = [m for m in transformer.modules() if isinstance(m, LoraLayer)]
    if not layers:
        raise ValueError("the transformer has no LoRA adapter; call add_lora first")
    return layers


@contextlib.contextmanager
def lora_merged(transformer: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block the adapter is merged into the base weights and switched off.

    The merge is ``W <- round(W + s B A)`` in the base dtype, computed in float32 (what PEFT's
    own ``merge`` computes). On exit the base weights get their original values back, bit for
    bit, and the adapter its previous on/off state. If the adapter is already off on entry
    (inside :func:`~trainer.model.pipeline.lora_disabled`) nothing is merged. Memory: one copy
    of every adapted base weight while inside.
    """
    layers = _lora_layers(transformer)
    if layers[0].disable_adapters:
        yield transformer
        return
    originals = []
    try:
        with torch.no_grad():
            for layer in layers:
                if layer.merged:
                    raise ValueError("a LoRA layer is already merged (PEFT merge_adapter?)")
                weight = layer.get_base_layer().weight
                originals.append((weight, weight.detach().clone()))
                for name in layer.active_adapters:
                    if name in layer.lora_A:
                        weight.add_(layer.get_delta_weight(name).to(weight.device))
        transformer.disable_adapters()
        yield transformer
    finally:
        with torch.no_grad():
            for weight, original in originals:
                weight.copy_(original)
        transformer.enable_adapters()


def _base_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """The plain linear layer behind a projection, refusing one whose adapter is live."""
    if isinstance(module, LoraLayer):
        if not module.disable_adapters:
            raise ValueError(
                "fused q/k/v would bypass the LoRA on this projection: fuse inside "
                "lora_merged (performance.merge_lora_for_rollouts) or lora_disabled"
            )
        module = module.get_base_layer()
    if not isinstance(module, torch.nn.Linear):
        raise TypeError(f"cannot fuse a {type(module).__name__} projection")
    return module


def _concat(layers: list[torch.nn.Module]) -> tuple[torch.Tensor, torch.Tensor | None]:
    linears = [_base_linear(m) for m in layers]
    weight = torch.cat([m.weight.detach() for m in linears])
    biases = [m.bias for m in linears]
    if all(b is None for b in biases):
        return weight, None
    if any(b is None for b in biases):
        raise ValueError("q, k and v projections disagree on having a bias")
    return weight, torch.cat([b.detach() for b in biases])


class FusedQKVJointAttnProcessor:
    """``JointAttnProcessor2_0`` with q, k, v from one matmul per stream (same math).

    Holds the concatenated weights of one attention layer, taken when it was made: a snapshot
    of the merged weights, valid only inside the :func:`qkv_fused` block that made it.
    """

    def __init__(self, attn: Attention):
        self.qkv = _concat([attn.to_q, attn.to_k, attn.to_v])
        self.added_qkv = (
            _concat([attn.add_q_proj, attn.add_k_proj, attn.add_v_proj])
            if getattr(attn, "add_q_proj", None) is not None
            else None
        )

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The joint attention of SD3 (image stream, and the prompt stream when given)."""
        residual = hidden_states
        batch_size = hidden_states.shape[0]
        query, key, value = F.linear(hidden_states, *self.qkv).chunk(3, dim=-1)
        head_dim = key.shape[-1] // attn.heads
        query = query.reshape(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.reshape(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.reshape(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if encoder_hidden_states is not None:
            if self.added_qkv is None:
                raise ValueError("a prompt stream reached an attention layer without one")
            eq, ek, ev = F.linear(encoder_hidden_states, *self.added_qkv).chunk(3, dim=-1)
            eq = eq.reshape(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ek = ek.reshape(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ev = ev.reshape(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_added_q is not None:
                eq = attn.norm_added_q(eq)
            if attn.norm_added_k is not None:
                ek = attn.norm_added_k(ek)
            query = torch.cat([query, eq], dim=2)
            key = torch.cat([key, ek], dim=2)
            value = torch.cat([value, ev], dim=2)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = (
                hidden_states[:, : residual.shape[1]],
                hidden_states[:, residual.shape[1] :],
            )
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if encoder_hidden_states is not None:
            return hidden_states, encoder_hidden_states
        return hidden_states


@contextlib.contextmanager
def qkv_fused(transformer: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block every ``JointAttnProcessor2_0`` layer projects q/k/v in one matmul.

    The fused weights are copies of the current (merged or base) weights, so the adapter must
    be merged or off on entry (a live adapter raises). The original processors are restored
    and the copies dropped on exit. Memory: one more copy of the q/k/v weights while inside.
    """
    swapped = []
    try:
        for module in transformer.modules():
            if isinstance(module, Attention) and type(module.processor) is JointAttnProcessor2_0:
                fused = FusedQKVJointAttnProcessor(module)
                swapped.append((module, module.processor))
                module.processor = fused  # set_processor would log each swap
        if not swapped:
            raise ValueError("no JointAttnProcessor2_0 attention layer to fuse")
        yield transformer
    finally:
        for module, original in swapped:
            module.processor = original
