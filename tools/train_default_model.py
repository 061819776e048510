#!/usr/bin/env python3
"""Train OpenRDU's default model: a tiny Llama on Python's own standard library.

Everything here is offline and deterministic:

* Corpus: the top-level ``*.py`` files of the running interpreter's standard
  library (``sysconfig.get_paths()["stdlib"]``), sorted by name. Every file's
  name, size and sha256 go into ``manifest.json``; if an earlier manifest is
  present in ``--out`` and the corpus differs (another Python build), the
  differences are reported, because the result will differ too.
* Split: files whose sorted index is ``VAL_EVERY``-periodic are held out as the
  validation set (whole files, so validation text is never seen in training).
* Tokenizer: byte-level BPE, 512 entries, trained with ``tokenizers`` on the
  training files; ``<s>`` (bos, id 0) and ``</s>`` (eos, id 1) are special, and
  the tokenizer prepends ``<s>`` like Llama's. Saved as ``tokenizer.json`` +
  ``tokenizer_config.json`` (loads with ``AutoTokenizer`` as a fast tokenizer).
* Model: ``LlamaForCausalLM``, the shape of spec section 13.6 (d=128, 4 heads of
  32, 4 KV heads i.e. plain MHA, SwiGLU FFN 256, 4 layers, vocab 512, 256
  positions, tied embeddings). Trained in float32 on one CPU thread with fixed
  seeds and ``torch.use_deterministic_algorithms(True)``; AdamW, linear warm-up
  then cosine decay; saved in bfloat16 with safetensors.

The default ``--steps`` (2000 steps of 16 x 256 tokens, about 4 passes over the
training tokens) takes about 16 minutes on one idle core (~0.47 s/step) and about
half an hour on a core shared with other work. With the same Python, torch and
tokenizers versions, two runs give bit-identical files (manifest timings aside).

    nice -n 10 .venv/bin/python tools/train_default_model.py [--out DIR] [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import sysconfig
import time
from pathlib import Path

# One thread, set before torch starts its pools.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers' trainer pool

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "models" / "pystdlib-tiny"

# Model shape (spec/sn40l.md section 13.6).
SHAPE = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    head_dim=32,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    hidden_act="silu",
)
BOS, EOS = "<s>", "</s>"

# Training hyper-parameters (the defaults are what produced the committed model).
SEQ_LEN = 256
BATCH = 16
LR = 3e-3
MIN_LR_FRAC = 0.05
WARMUP = 200
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0
DEFAULT_STEPS = 2000
VAL_EVERY = 20  # files with index % VAL_EVERY == VAL_EVERY - 1 are held out
EVAL_BATCHES = 16  # validation batches (fixed windows) per evaluation
LOG_EVERY = 50
EVAL_EVERY = 500


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- corpus
def corpus_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((p for p in root.glob("*.py") if p.is_file()), key=lambda p: p.name)
    if not files:
        sys.exit(f"no *.py files under {root}")
    return root, files


def data_record(name: str, data: bytes) -> dict:
    """How manifests record a corpus document: its name, size and SHA-256."""
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_record(p: Path) -> dict:
    return data_record(p.name, p.read_bytes())


def decode_text(data: bytes) -> str:
    # Decode leniently so a stray non-UTF-8 byte cannot stop the run; normalise newlines.
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def read_text(p: Path) -> str:
    return decode_text(p.read_bytes())


def compare_with_previous(out: Path, records: list[dict], py: str) -> None:
    prev_path = out / "manifest.json"
    if not prev_path.exists():
        return
    try:
        prev = json.loads(prev_path.read_text())
    except (OSError, ValueError):
        return
    old = {r["name"]: r["sha256"] for r in prev.get("corpus", {}).get("files", [])}
    new = {r["name"]: r["sha256"] for r in records}
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(n for n in set(new) & set(old) if new[n] != old[n])
    if added or removed or changed:
        log(f"WARNING: corpus differs from the one in {prev_path} "
            f"(Python {prev.get('python', {}).get('version', '?')} there, {py} here):")
        for tag, names in (("added", added), ("removed", removed), ("changed", changed)):
            if names:
                log(f"  {tag} ({len(names)}): {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        log("  The trained model will not be bit-identical to the committed one.")
    else:
        log(f"corpus matches {prev_path} ({len(new)} files)")


# --------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=SHAPE["vocab_size"],
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    assert tok.get_vocab_size() == SHAPE["vocab_size"], tok.get_vocab_size()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)]
    )
    return tok


def save_tokenizer(tok, out: Path):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=SHAPE["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(out)
    # Name the generic fast class (transformers 5 writes its own "TokenizersBackend",
    # which transformers 4.x does not know; both versions load this name).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return fast


def encode_docs(tok, texts: list[str]) -> torch.Tensor:
    """One stream: <s> doc </s> <s> doc </s> ... (the post-processor adds <s>)."""
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(1)
    return torch.tensor(ids, dtype=torch.long)


# --------------------------------------------------------------------------- model
def build_model(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        **SHAPE,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=None,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.02,
        use_cache=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.to(torch.float32)
    return model


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def batch_loss(model, x: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x[:, :-1]).logits
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), x[:, 1:].reshape(-1)
    )


def val_windows(val_ids: torch.Tensor) -> torch.Tensor:
    """Fixed, evenly spaced validation windows (deterministic, independent of seed)."""
    n = EVAL_BATCHES * BATCH
    span = len(val_ids) - (SEQ_LEN + 1)
    starts = torch.linspace(0, span, n).long()
    return torch.stack([val_ids[s : s + SEQ_LEN + 1] for s in starts.tolist()])


@torch.no_grad()
def evaluate(model, windows: torch.Tensor) -> float:
    model.eval()
    tot = 0.0
    for i in range(0, len(windows), BATCH):
        tot += batch_loss(model, windows[i : i + BATCH]).item()
    model.train()
    return tot / math.ceil(len(windows) / BATCH)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)})")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimizer steps (default {DEFAULT_STEPS})")
    ap.add_argument("--seed", type=int, default=0, help="seed for init and batch sampling (default 0)")
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    # Corpus.
    root, files = corpus_files()
    records = [file_record(p) for p in files]
    pyver = platform.python_version()
    compare_with_previous(out, records, pyver)
    val_idx = {i for i in range(len(files)) if i % VAL_EVERY == VAL_EVERY - 1}
    for i, r in enumerate(records):
        r["split"] = "val" if i in val_idx else "train"
    texts = [read_text(p) for p in files]
    train_texts = [t for i, t in enumerate(texts) if i not in val_idx]
    val_texts = [t for i, t in enumerate(texts) if i in val_idx]
    log(f"corpus: {len(files)} files, {sum(r['bytes'] for r in records)} bytes from {root} "
        f"(train {len(train_texts)}, val {len(val_texts)}: {', '.join(files[i].name for i in sorted(val_idx))})")

    # Tokenizer.
    tok = train_tokenizer(train_texts)
    save_tokenizer(tok, out)
    train_ids = encode_docs(tok, train_texts)
    val_ids = encode_docs(tok, val_texts)
    n_chars = sum(len(t) for t in train_texts)
    log(f"tokenizer: vocab {tok.get_vocab_size()}, train {len(train_ids)} tokens "
        f"({n_chars / len(train_ids):.2f} chars/token), val {len(val_ids)} tokens "
        f"[{time.time() - t0:.1f}s]")

    # Model and optimizer.
    model = build_model(args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=1e-8, foreach=False,
    )
    vwin = val_windows(val_ids)
    gen = torch.Generator().manual_seed(args.seed)
    span = len(train_ids) - (SEQ_LEN + 1)
    offs = torch.arange(SEQ_LEN + 1)

    model.train()
    t_train = time.time()
    ema = None
    history = []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps)
        starts = torch.randint(0, span + 1, (BATCH,), generator=gen)
        x = train_ids[starts[:, None] + offs]
        loss = batch_loss(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % LOG_EVERY == 0 or step == args.steps - 1:
            el = time.time() - t_train
            log(f"step {step:5d}/{args.steps} loss {lv:.4f} (ema {ema:.4f}) lr {g['lr']:.2e} "
                f"[{el:.0f}s, {el / (step + 1):.3f}s/step]")
        if (step + 1) % EVAL_EVERY == 0 and step + 1 < args.steps:
            vl = evaluate(model, vwin)
            history.append({"step": step + 1, "train_loss_ema": round(ema, 4), "val_loss": round(vl, 4)})
            log(f"  eval at step {step + 1}: val loss {vl:.4f}")

    train_time = time.time() - t_train
    val_f32 = evaluate(model, vwin)
    # Final train loss measured the same way as validation: fixed windows, no update.
    train_f32 = evaluate(model, val_windows(train_ids))

    # Save in bfloat16 and re-measure with the stored weights.
    model.to(torch.bfloat16)
    model.generation_config.bos_token_id = 0
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 1
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    val_bf16 = evaluate(model, vwin)
    train_bf16 = evaluate(model, val_windows(train_ids))
    history.append({"step": args.steps, "train_loss_ema": round(ema, 4), "val_loss": round(val_f32, 4)})
    log(f"final: train {train_f32:.4f} / val {val_f32:.4f} (float32), "
        f"train {train_bf16:.4f} / val {val_bf16:.4f} (bfloat16 as saved); log(512) = {math.log(512):.4f}")

    # Samples.
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(out)
    samples = {}
    model.eval()
    for prompt in ("import os\n", "def ", "class ", "    def __init__(self"):
        enc = hf_tok(prompt, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=48, do_sample=False)
        samples[prompt] = hf_tok.decode(ids[0], skip_special_tokens=True)
        log(f"--- sample {prompt!r}\n{samples[prompt]}\n---")

    wall = time.time() - t0
    manifest = {
        "model": "pystdlib-tiny",
        "architecture": "LlamaForCausalLM",
        "shape": SHAPE,
        "parameters": n_params,
        "python": {"version": pyver, "implementation": platform.python_implementation(),
                   "build": " ".join(platform.python_build()), "stdlib": str(root)},
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "tokenizers": __import__("tokenizers").__version__,
        "training": {
            "seed": args.seed, "steps": args.steps, "seq_len": SEQ_LEN, "batch": BATCH,
            "tokens_seen": args.steps * BATCH * SEQ_LEN, "optimizer": "AdamW", "lr": LR,
            "betas": list(BETAS), "weight_decay": WEIGHT_DECAY, "warmup_steps": WARMUP,
            "schedule": f"linear warm-up, cosine to {MIN_LR_FRAC} x lr", "grad_clip": GRAD_CLIP,
            "dtype": "float32 (saved as bfloat16)", "threads": 1,
        },
        "tokenizer": {"type": "byte-level BPE", "vocab_size": SHAPE["vocab_size"], "bos": BOS, "eos": EOS,
                      "train_tokens": len(train_ids), "val_tokens": len(val_ids),
                      "chars_per_token": round(n_chars / len(train_ids), 3)},
        "results": {
            "train_loss": round(train_f32, 4), "val_loss": round(val_f32, 4),
            "train_loss_bf16": round(train_bf16, 4), "val_loss_bf16": round(val_bf16, 4),
            "final_train_loss_ema": round(ema, 4),
            "loss_note": f"mean cross-entropy (nats/token) over {EVAL_BATCHES * BATCH} fixed windows of {SEQ_LEN} tokens",
            "history": history,
            "train_seconds": round(train_time, 1), "wall_seconds": round(wall, 1),
            "samples": samples,
        },
        "corpus": {
            "source": "sysconfig.get_paths()['stdlib'] top-level *.py, sorted by name",
            "val_rule": f"files with sorted index % {VAL_EVERY} == {VAL_EVERY - 1}",
            "files": records,
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    log(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    log(f"wall time {wall:.0f}s (training {train_time:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
