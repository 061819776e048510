"""Random-weight Llama-family checkpoints written by transformers' ``save_pretrained``, for compiler tests."""

import torch
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

SHAPES = {
    "tiny-tied": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=96, tie_word_embeddings=True),
    "gqa-untied": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=80, tie_word_embeddings=False),
    "wide-heads": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=64, tie_word_embeddings=True),
}

# model_type -> transformers' config and model classes.
CLASSES = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
           "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def make_checkpoint(path, *, seed=0, dtype=torch.bfloat16, max_position_embeddings=64, model_type="llama", **shape):
    """Random weights N(0, 0.08) (norm gains 1 + that, biases too) for a ``model_type`` of ``shape``, saved."""
    torch.manual_seed(seed)
    config_class, model_class = CLASSES[model_type]
    config = config_class(max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-5, **shape)
    model = model_class(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.08)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(1.0)
    model.to(dtype).save_pretrained(path, safe_serialization=True)
    return path


def load_model(path):
    """The checkpoint at ``path`` in transformers' own class for its model_type, float32, eval mode."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def transformers_greedy(path, prompt, new_tokens):
    """The ``new_tokens`` ids transformers' ``generate`` picks greedily after ``prompt`` (no early stop)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = load_model(path).generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                        min_new_tokens=new_tokens, do_sample=False)
    return out[0, len(prompt):].tolist()


def transformers_logits(path, tokens):
    model = load_model(path)
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def rounded_checkpoint(path, out):
    """The checkpoint at ``path`` saved at ``out`` in float32 with every matrix (2-D weight) rounded to bf16 by
    torch's ``.to(torch.bfloat16)`` and norm gains and biases as they were: what ``--weights-dtype bf16`` computes."""
    model = load_model(path)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(p.to(torch.bfloat16).float())
    model.save_pretrained(out, safe_serialization=True)
    return out
