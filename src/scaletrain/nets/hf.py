"""A Hugging Face causal language model (Llama, Qwen2, Mistral, ... from transformers) as a
plain net: built from a config given in YAML, or from a local checkpoint directory as
``save_pretrained`` writes it (its ``config.json`` and ``*.safetensors`` weights), never
downloaded; token ids in, logits out.

Its plans for the sharded strategies come from the model itself: the tensor-parallel plan
transformers declares for it (``base_model_tp_plan`` and the head's), its decoder layers
as the blocks, the embeddings before them and the final norm and head after them.
"""

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scaletrain import compat
from scaletrain.nets.weights import WeightFiles

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


# Keys of a config.json that describe the file, not the architecture: among them the
# dtype it was saved in (training keeps fp32 weights; mixed precision is the strategy's).
FILE_KEYS = ("architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype")


def pretrained_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of the checkpoint directory ``directory`` (given as
    ``model.net.pretrained``); a one-line error where it is not one."""
    setting = f"model.net.pretrained={directory}"
    path = Path(directory).expanduser()
    if not path.exists():
        raise ValueError(
            f"{setting}: no such directory; scaletrain never downloads: fetch the model once "
            "(e.g. hf download <id> --local-dir <dir>) and give that directory"
        )
    if not path.is_dir():
        raise ValueError(f"{setting}: not a directory (give the folder save_pretrained wrote)")
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{setting}: no config.json in it; a Hugging Face checkpoint directory holds "
            "config.json and *.safetensors, as save_pretrained writes them"
        )
    if not any(path.glob("*.safetensors")):
        raise ValueError(
            f"{setting}: no *.safetensors files in it (only safetensors weights are read; "
            "save_pretrained writes them by default)"
        )
    return json.loads((path / "config.json").read_text())


def architecture_mismatches(given: dict[str, Any], saved: Any, directory: str) -> list[str]:
    """Each setting of ``model.net.config`` that differs from the checkpoint's config."""
    return [
        f"model.net.config.{key}={value}: the checkpoint in model.net.pretrained={directory} "
        f"has {getattr(saved, key, None)}; its config.json sets the architecture: leave "
        "model.net.config out (model.net.config=null) or match it"
        for key, value in given.items()
        if getattr(saved, key, None) != value
    ]


class CausalLM(nn.Module):
    """``AutoModelForCausalLM`` built from ``config`` (``model_type`` and the sizes of
    transformers' config class for it), or from the checkpoint directory ``pretrained``
    (its config, and its weights as the initial ones), with ``attn_implementation``;
    ``initializer_range`` of the config sets drawn weights' deviation, as transformers'
    own init does."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        pretrained: str | None = None,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        transformers = transformers_module()
        if pretrained is not None:
            saved = dict(pretrained_config(pretrained))
            if "model_type" not in saved:
                raise ValueError(
                    f"model.net.pretrained={pretrained}: its config.json names no model_type"
                )
            hf_config = transformers.AutoConfig.for_model(
                saved.pop("model_type"),
                **{k: v for k, v in saved.items() if k not in FILE_KEYS},
            )
            problems = architecture_mismatches(dict(config or {}), hf_config, pretrained)
            if problems:
                raise ValueError(problems[0])
        elif config is not None:
            settings = dict(config)
            hf_config = transformers.AutoConfig.for_model(settings.pop("model_type"), **settings)
        else:
            raise ValueError("model.net: give model.net.config or model.net.pretrained=<dir>")
        hf_config.use_cache = False  # training and scoring whole windows: no cache to keep
        self.hf = transformers.AutoModelForCausalLM.from_config(
            hf_config, attn_implementation=attn_implementation
        )
        self.context_length = hf_config.max_position_embeddings
        self.std = hf_config.initializer_range
        # read by scaletrain.nets.init and scaletrain.parallel.materialize
        self.pretrained_weights = None
        if pretrained is not None:
            self.pretrained_weights = WeightFiles(Path(pretrained).expanduser(), prefix="hf.")
            names = [name for name, _ in self.named_parameters()]
            missing = self.pretrained_weights.missing(names)
            if missing:
                raise ValueError(
                    f"model.net.pretrained={pretrained}: its safetensors hold no "
                    f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                    f"({len(missing)} of the {len(names)} parameters its config.json makes)"
                )

    def standalone_config(self) -> dict[str, Any]:
        """The net's settings without the checkpoint directory: what a run's checkpoints
        store, so that they load (eval, export, resume) where the directory is gone."""
        config = {
            key: value
            for key, value in self.hf.config.to_diff_dict().items()
            if key not in FILE_KEYS and key != "use_cache"
        }
        return {"config": config, "pretrained": None}

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
