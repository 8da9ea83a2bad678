"""A Hugging Face causal language model (Llama, Qwen2, Mistral, ... from transformers) as a
plain net: built from a config given in YAML, never downloaded; token ids in, logits out.

Its plans for the sharded strategies come from the model itself: the tensor-parallel plan
transformers declares for it (``base_model_tp_plan`` and the head's), its decoder layers
as the blocks, the embeddings before them and the final norm and head after them.
"""

from typing import Any

import torch
from torch import nn

from scaletrain import compat

MISSING = (
    "model=hf_causal_lm needs transformers, the optional extra 'hf': "
    "pip install -e '.[hf]' (scripts/setup.sh installs it)"
)


def transformers_module() -> Any:
    try:
        import transformers
    except ModuleNotFoundError:
        raise ModuleNotFoundError(MISSING) from None
    return transformers


class CausalLM(nn.Module):
    """``AutoModelForCausalLM`` built from ``config`` (``model_type`` and the sizes of
    transformers' config class for it), with ``attn_implementation``; ``initializer_range``
    of the config sets the initial weights' deviation, as transformers' own init does."""

    def __init__(self, config: dict[str, Any], attn_implementation: str = "sdpa") -> None:
        super().__init__()
        transformers = transformers_module()
        settings = dict(config)
        hf_config = transformers.AutoConfig.for_model(settings.pop("model_type"), **settings)
        hf_config.use_cache = False  # training and scoring whole windows: no cache to keep
        self.hf = transformers.AutoModelForCausalLM.from_config(
            hf_config, attn_implementation=attn_implementation
        )
        self.context_length = hf_config.max_position_embeddings
        self.std = hf_config.initializer_range

    def init_parameter(self, name: str, value: torch.Tensor, generator: torch.Generator) -> None:
        """transformers' rule: linear and embedding weights N(0, initializer_range), biases
        0, norms' scales 1."""
        module_name, _, attribute = name.rpartition(".")
        module = self.get_submodule(module_name)
        if attribute == "bias":
            nn.init.zeros_(value)
        elif isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(value, mean=0.0, std=self.std, generator=generator)
        else:
            nn.init.ones_(value)

    def parallel_plan(self) -> dict[str, Any]:
        """The model's own plans (see ``scaletrain.parallel.net_plan``)."""
        tensor_parallel, pipeline = compat.hf_parallel_plans(self.hf)
        config = self.hf.config
        order = [name for name, _ in self.hf.named_modules()]
        blocks = next(
            name for name in pipeline if isinstance(self.hf.get_submodule(name), nn.ModuleList)
        )
        ends = sorted((name for name in pipeline if name != blocks), key=order.index)
        return {
            "blocks": f"hf.{blocks}",
            "tensor_parallel": {f"hf.{name}": style for name, style in tensor_parallel.items()},
            "pipeline": {
                "first": [f"hf.{n}" for n in ends if order.index(n) < order.index(blocks)],
                "last": [f"hf.{n}" for n in ends if order.index(n) > order.index(blocks)],
            },
            "tensor_parallel_divides": {
                "model.net.config.num_attention_heads": config.num_attention_heads,
                "model.net.config.num_key_value_heads": config.num_key_value_heads,
            },
        }

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, length, vocab_size)`` for token ids ``(batch, length)``."""
        return self.hf(input_ids=tokens).logits
