"""Write a tiny Llama checkpoint as a published one looks on disk, for trying
``experiment=hf_finetune`` offline: ``config.json``, ``*.safetensors`` (in shards with
their index, as ``save_pretrained`` writes a larger model) and the tokenizer files.

    python scripts/make_tiny_llama.py data/tiny-llama --corpus data/docs.jsonl

Its weights are drawn at random (seeded), its tokenizer a byte-level BPE trained on the
docstrings of the Python standard library's modules, classes and functions; ``--corpus``
also writes those docstrings as JSON Lines, one document per row (``{"text": ...}``), to
fine-tune on.
A model of one's own, saved with ``save_pretrained``, takes its place as it is.
"""

import argparse
import ast
import json
import math
import sys
import sysconfig
from pathlib import Path

DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_docstrings() -> list[str]:
    """The docstrings (of 200 characters or more) in the standard library's top-level
    ``*.py`` files."""
    texts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, DOCUMENTED) else None
            if doc and len(doc) >= 200:
                texts.append(doc)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the checkpoint directory to write")
    parser.add_argument("--corpus", type=Path, help="also write the docstrings here (.jsonl)")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import transformers

    from scaletrain.data.preparation import END_OF_DOCUMENT, train_bpe

    texts = stdlib_docstrings()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(iter(texts), args.vocab_size),
        eos_token=END_OF_DOCUMENT,
        bos_token=END_OF_DOCUMENT,
    )
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=8 * math.ceil(args.hidden_size / 3),  # 8/3 of it, a multiple of 8
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(args.seed)
    model = transformers.LlamaForCausalLM(config)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # two shards, as a published model of several GB comes in several
    model.save_pretrained(args.out, max_shard_size=weight_bytes // 2 + 1)
    tokenizer.save_pretrained(args.out)
    print(f"{args.out}: Llama, {sum(p.numel() for p in model.parameters()):,} parameters")
    if args.corpus:
        args.corpus.parent.mkdir(parents=True, exist_ok=True)
        with open(args.corpus, "w", encoding="utf-8") as file:
            for text in texts:
                file.write(json.dumps({"text": text}) + "\n")
        print(f"{args.corpus}: {len(texts)} documents")


if __name__ == "__main__":
    sys.exit(main())
