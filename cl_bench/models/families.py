"""The transformers MoE families clbench runs, and where each keeps its sparse blocks and routers.

transformers 5 lays every supported family out alike: a decoder layer holds a sparse block, the
block holds its experts as fused 3-D tensors (``experts.gate_up_proj`` (E, 2I, H) and
``experts.down_proj`` (E, H, I)) and a router module whose ``weight`` is (E, H) and whose output
is (logits, top-k weights, top-k indices). They differ in the attribute names, in how the router
turns logits into the top-k weights, and in extras such as Qwen2-MoE's shared expert. MoExtend's
surgery, the routing analysis, adapters and LoRA all find the blocks through this table.

Families left out, and why (each would need its own routing code in MoExtend's extended block):
DeepSeek-V2/V3 and GLM-4-MoE (group-limited sigmoid routing with a score-correction bias and
shared experts), PhiMoE (sparsemixer routing), DBRX (experts in another tensor layout), Jamba and
GraniteMoeHybrid (Mamba layers between the MoE layers), JetMoE (mixture-of-attention experts),
Switch/NLLB-MoE (encoder-decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cl_bench.errors import UsageError


@dataclass(frozen=True)
class Family:
    """How one transformers MoE family is laid out."""

    model_type: str
    block_class: str  # class name of the sparse block
    block_attr: str = "mlp"  # the decoder layer's attribute that holds it
    router_attr: str = "gate"  # the block's attribute that holds the router
    shared_expert: bool = False  # Qwen2-MoE: sigmoid-gated shared expert added to the output
    float_weights: bool = False  # Mixtral hands the experts float32 routing weights; the others cast them
    topk_of_logits: bool = False  # Granite-MoE: top-k of the logits, then a softmax over those k

    def block(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.block_attr)

    def router(self, block: nn.Module) -> nn.Module:
        return getattr(block, self.router_attr)

    def renormalizes(self, block: nn.Module) -> bool:
        """Whether the top-k weights sum to 1 (Mixtral and Granite always; the others by config)."""
        return self.topk_of_logits or getattr(self.router(block), "norm_topk_prob", True)


FAMILIES = {
    "mixtral": Family("mixtral", "MixtralSparseMoeBlock", float_weights=True),
    "olmoe": Family("olmoe", "OlmoeSparseMoeBlock"),
    "qwen2_moe": Family("qwen2_moe", "Qwen2MoeSparseMoeBlock", shared_expert=True),
    "qwen3_moe": Family("qwen3_moe", "Qwen3MoeSparseMoeBlock"),
    "granitemoe": Family("granitemoe", "GraniteMoeMoE", block_attr="block_sparse_moe", router_attr="router",
                         topk_of_logits=True),
}
WHY_NOT = "DeepSeek, GLM-4-MoE, PhiMoE, DBRX, Jamba, JetMoE and others route or store experts otherwise"


def unsupported(model_type: str) -> str:
    return (f"model type {model_type!r} is not a supported MoE family; clbench runs {', '.join(FAMILIES)} "
            f"(cl_bench/models/families.py says why the others are not: {WHY_NOT})")


def family_of(lm: nn.Module) -> Family:
    model_type = lm.config.model_type
    if model_type not in FAMILIES:
        raise UsageError(unsupported(model_type))
    return FAMILIES[model_type]


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    return lm.model.layers


def block_of(lm: nn.Module, layer: int) -> nn.Module:
    """The sparse block (or MoExtend's extension of it) of decoder layer `layer`."""
    return family_of(lm).block(decoder_layers(lm)[layer])


def router_of(lm: nn.Module, layer: int) -> nn.Module:
    """The original router module of decoder layer `layer`'s sparse block."""
    block = block_of(lm, layer)
    return family_of(lm).router(getattr(block, "block", block))  # inside an ExtendedMoeBlock: the original
