"""The expert library: trained experts, their deterministic variants, the router, and the slot layout.

A library folder (written by ``tools/train_experts.py``, or by :func:`write_untrained` for tests) holds
``manifest.json``::

    {"base": ..., "classes": [expert names in the router's class order],
     "experts": [{"name", "slice", "path"}, ...], "router": "router", "prompts": "prompts.jsonl"}

one Hugging Face Llama checkpoint per trained expert (all of one architecture), a router checkpoint
whose class scores are ``logits[:K]`` at the prompt's last position, and held-out prompts
(``{"slice", "expert", "text"}`` per line).

Every expert is stored as a **slot image**: the weight regions of the compiled architecture, in
address order, each padded to whole memory words, so that one DDR -> HBM copy of ``slot_bytes``
moves an expert into an HBM slot. The library reaches ``size`` experts with **variants**: variant
``j`` of trained expert ``e`` (named ``e.vJJJ``) is ``e`` with the final RMSNorm gain (region
``w.norm``) multiplied element-wise by ``exp(0.25 * n)``, ``n`` standard-normal from
``numpy.random.default_rng([j, index of e])``. Every logit of every step depends on that gain, so
each variant's logits differ from every other expert's and serving the wrong expert changes the
request's logits digest; the library checks that all images are distinct.
"""

import hashlib
import json
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from sw.compiler.checkpoint import load_checkpoint, load_tokenizer, read_json
from sw.compiler.compile import compile_model, max_context, stream_dtypes
from sw.compiler.decode import decode_graph
from sw.compiler.layout import layout
from sw.compiler.lower import lower
from sw.compiler.memory_map import allocated_size
from sw.errors import CoEError, OpenRDUError

MANIFEST = "manifest.json"
VARIANT_REGION = "w.norm"
VARIANT_SCALE = 0.25


@dataclass(frozen=True)
class Expert:
    """One expert of the library: ``source`` is the trained expert it derives from, ``variant`` 0 for itself."""

    name: str
    source: str
    variant: int
    slice: str
    nbytes: int


def weight_regions(memory_map):
    """The weight regions of ``memory_map`` in address order as ``[(name, offset in the slot, nbytes)]``,
    and the slot's size in bytes."""
    wb = memory_map.memory.word_bytes
    out, at = [], 0
    for r in sorted(memory_map.regions.values(), key=lambda r: (r.tier, r.offset)):
        if r.what == "weight":
            out.append((r.name, at, r.nbytes))
            at += allocated_size(r.nbytes, wb)
    return out, at


def slot_image(regions, slot_bytes, image):
    """The uint32 words of one slot: each weight region's words at its offset in the slot (zero padding)."""
    words = np.zeros(slot_bytes // 4, np.uint32)
    for name, at, nbytes in regions:
        words[at // 4: at // 4 + nbytes // 4] = image[name]
    return words


def checkpoint_image(checkpoint, arch):
    """The slot image of ``checkpoint`` laid out as ``arch`` (a compiled model of the slots' architecture).

    Raises :class:`CoEError` when its weights need more than a slot, or its architecture differs from
    the one the slots were sized for.
    """
    ckpt = load_checkpoint(checkpoint) if not hasattr(checkpoint, "weights") else checkpoint
    target, shape = arch.target, ckpt.shape
    context = min(arch.context, max_context(shape, target))
    gemv, embed = stream_dtypes(shape, target, ckpt.weights)
    try:
        graph = decode_graph(shape, context=context, weight_dtype="bf16" if gemv else "fp32")
        step = lower(graph, target, context, gemv_bf16=gemv, embed_bf16=embed)
    except OpenRDUError as error:
        raise CoEError(f"{ckpt.path}: cannot lay out the expert for {target.name}: {error}") from None
    mmap, image, _ = layout(step.placements, target, ckpt.weights, gemv_bf16=gemv, embed_bf16=embed)
    regions, nbytes = weight_regions(mmap)
    slot_regions, slot_bytes = weight_regions(arch.memory_map)
    if nbytes > slot_bytes:
        raise CoEError(f"{ckpt.path}: the expert's weights take {nbytes:,} bytes, more than a slot of "
                       f"{slot_bytes:,} bytes")
    if shape != arch.shape or regions != slot_regions:
        mine, theirs = _describe(shape), _describe(arch.shape)
        if mine == theirs:          # the sizes agree: name the settings that differ (RoPE, eps, token ids)
            diff = [f.name for f in fields(shape) if getattr(shape, f.name) != getattr(arch.shape, f.name)]
            mine, theirs = (", ".join(f"{k} {getattr(s, k)}" for k in diff) for s in (shape, arch.shape))
        raise CoEError(f"{ckpt.path}: its architecture ({mine}) differs from the one the slots "
                       f"were sized for ({theirs})")
    return slot_image(regions, slot_bytes, image)


def _describe(s):
    return (f"{s.num_layers} layers, d={s.hidden_size}, FFN {s.intermediate_size}, {s.num_heads}x{s.head_dim} "
            f"heads, {s.num_kv_heads} KV, vocab {s.vocab_size}, {'tied' if s.tie_word_embeddings else 'untied'}")


class Library:
    """The experts of a library folder on one target, ``size`` of them at least (trained + variants).

    Parameters
    ----------
    directory : path
        The library folder (see the module docstring).
    target : sw.target.Target
        The chip the experts and the router are compiled for.
    size : int
        Experts in the library: the trained ones, then variants round-robin over them.
    compile : callable
        ``compile(checkpoint path, target) -> CompiledModel`` (the command line passes its cached compile).

    Attributes
    ----------
    arch : CompiledModel
        The slots' architecture, compiled from the first trained expert.
    router : CompiledModel
    classes : list of str
        The router's classes, in order: trained expert names.
    experts : dict
        Name -> :class:`Expert`, trained first.
    regions, slot_bytes
        The weight regions' layout in a slot, and a slot's size in bytes.
    tokenizer
        The first expert's tokenizer, or None.

    Raises
    ------
    CoEError
        A manifest that is missing or malformed, an expert whose architecture or size does not fit the
        slots, a router whose classes do not match the library.
    """

    def __init__(self, directory, target, *, size=150, compile=None):
        compile = compile or (lambda path, target: compile_model(path, target))
        self.directory = root = Path(directory)
        manifest = _manifest(root)
        trained = manifest["experts"]
        paths = {e["name"]: _inside(root, e["path"], f"expert {e['name']!r}") for e in trained}
        self.arch = compile(paths[trained[0]["name"]], target)
        self.target = target
        self.regions, self.slot_bytes = weight_regions(self.arch.memory_map)
        self._images = {}
        for e in trained:
            self._images[e["name"]] = _labelled(paths[e["name"]], lambda p: checkpoint_image(p, self.arch))
        self.classes = list(manifest["classes"])
        names = [e["name"] for e in trained]
        if sorted(self.classes) != sorted(names) or len(set(self.classes)) != len(self.classes):
            raise CoEError(f"{root / MANIFEST}: the router's classes {self.classes} do not match the library's "
                           f"trained experts {names}")
        router_path = _inside(root, manifest["router"], "the router")
        self.router = _labelled(router_path, lambda p: self._router(p, compile))
        if self.router.shape.vocab_size < len(self.classes):
            raise CoEError(f"{router_path}: the router scores {len(self.classes)} classes as logits[:K] but its "
                           f"vocabulary has only {self.router.shape.vocab_size} entries")
        self.tokenizer = load_tokenizer(paths[names[0]])
        self.prompts = _prompts(root / manifest.get("prompts", "prompts.jsonl"))
        self.experts = {e["name"]: Expert(e["name"], e["name"], 0, str(e.get("slice", "")), self.slot_bytes)
                        for e in trained}
        j = 0
        while len(self.experts) < size:
            j += 1
            for e in trained:
                if len(self.experts) < size:
                    self.experts[f"{e['name']}.v{j:03d}"] = Expert(f"{e['name']}.v{j:03d}", e["name"], j,
                                                                   str(e.get("slice", "")), self.slot_bytes)
        digests = {}
        for name in self.experts:
            d = hashlib.sha256(self.image(name).tobytes()).hexdigest()
            if d in digests:
                raise CoEError(f"experts {digests[d]!r} and {name!r} have identical weights")
            digests[d] = name

    @property
    def trained(self):
        return [e.name for e in self.experts.values() if e.variant == 0]

    def __len__(self):
        return len(self.experts)

    def check(self, name):
        """``name`` if the library holds it, else :class:`CoEError`."""
        if name not in self.experts:
            raise CoEError(f"unknown expert {name!r}: the library holds {len(self.experts)} experts "
                           f"({', '.join(list(self.experts)[:4])}, ...)")
        return name

    def image(self, name):
        """The slot image of expert ``name`` (uint32 words, ``slot_bytes / 4`` of them)."""
        e = self.experts[self.check(name)]
        words = self._images[e.source]
        if e.variant == 0:
            return words
        src = list(self._images).index(e.source)
        (at, nbytes), = [(at, n) for r, at, n in self.regions if r == VARIANT_REGION]
        words = words.copy()
        gain = words[at // 4: (at + nbytes) // 4].view(np.float32)
        noise = np.random.default_rng([e.variant, src]).standard_normal(gain.size)
        words[at // 4: (at + nbytes) // 4] = (gain * np.exp(VARIANT_SCALE * noise)).astype(np.float32).view(np.uint32)
        return words

    def alone(self, name):
        """Expert ``name`` as a plain compiled model (its own memory map), to run it alone as a reference."""
        return self.with_weights(self.image(name))

    def with_weights(self, words):
        """The architecture's compiled model with the weights of slot image ``words``."""
        image = dict(self.arch.image)
        for region, at, nbytes in self.regions:
            image[region] = words[at // 4: (at + nbytes) // 4]
        return replace(self.arch, image=image)

    def _router(self, path, compile):
        """The router compiled; one of the experts' architecture reuses their kernels with its own weights."""
        ckpt = load_checkpoint(path)
        if ckpt.shape == self.arch.shape:
            return self.with_weights(checkpoint_image(ckpt, self.arch))
        return compile(path, self.target)

    def encode(self, text):
        if self.tokenizer is None:
            raise CoEError(f"{self.directory}: the first expert has no tokenizer.json, so text prompts cannot be "
                           f"encoded")
        return list(self.tokenizer(text).input_ids)

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=True) if self.tokenizer else None


def _labelled(path, fn):
    """``fn(path)``, with any OpenRDUError's message prefixed by the path when it does not name it."""
    try:
        return fn(path)
    except CoEError:
        raise
    except OpenRDUError as error:
        raise CoEError(f"{path}: {error}" if str(path) not in str(error) else str(error)) from None


def _inside(root, rel, what):
    if not isinstance(rel, str) or not rel:
        raise CoEError(f"{root / MANIFEST}: {what} has no path")
    path = (root / rel)
    if not path.is_dir():
        raise CoEError(f"{root / MANIFEST}: {what}: no checkpoint folder {path}")
    return path


def _manifest(root):
    path = root / MANIFEST
    if not root.is_dir():
        raise CoEError(f"{root}: no expert library folder")
    if not path.is_file():
        raise CoEError(f"{root}: no {MANIFEST} (tools/train_experts.py writes one)")
    try:
        m = read_json(path, what=MANIFEST)
    except OpenRDUError as error:
        raise CoEError(str(error)) from None
    ok = (isinstance(m, dict) and isinstance(m.get("experts"), list) and m["experts"]
          and all(isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] for e in m["experts"])
          and isinstance(m.get("classes"), list) and all(isinstance(c, str) for c in m["classes"])
          and isinstance(m.get("router"), str) and isinstance(m.get("prompts", ""), str))
    if not ok:
        raise CoEError(f"{path}: expected {{\"classes\": [names], \"experts\": [{{\"name\", \"path\"}}, ...], "
                       f"\"router\": path, optional \"prompts\": path}}")
    names = [e["name"] for e in m["experts"]]
    if len(set(names)) != len(names):
        raise CoEError(f"{path}: expert names repeat")
    return m


def _prompts(path):
    if not path.is_file():
        return []
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise CoEError(f"{path}: not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CoEError(f"{path} line {n}: not JSON ({error.msg})") from None
            if not (isinstance(row, dict) and isinstance(row.get("text"), str) and isinstance(row.get("expert"), str)):
                raise CoEError(f'{path} line {n}: expected {{"slice", "expert": name, "text": prompt}}')
            out.append(row)
    return out


def write_untrained(directory, base, *, experts=2, seed=0, prompts=()):
    """Write a library folder without training: ``experts`` perturbed copies of ``base`` and a router.

    Expert ``i`` (named ``x{i}``) is ``base`` with every weight scaled by ``1 + 0.02 n`` (``n``
    standard-normal from ``default_rng([seed, i])``), rounded to bf16; the router is ``base`` with its
    (tied) embedding rows ``0..experts-1`` replaced by fixed random vectors, so its class scores are a
    deterministic (not trained) function of the prompt, and it shares the experts' compiled kernels.
    ``prompts`` (texts) go to ``prompts.jsonl`` labelled round-robin. For tests and demos; returns the folder.
    """
    import torch
    from safetensors.torch import save_file

    from sw.compiler.checkpoint import load_checkpoint as load

    root, base = Path(directory), Path(base)
    root.mkdir(parents=True, exist_ok=True)
    ckpt = load(base)
    config = json.loads((base / "config.json").read_text())
    side = [f for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json") if (base / f).exists()]

    def write(folder, weights, cfg):
        folder.mkdir(exist_ok=True)
        save_file({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(torch.bfloat16)
                   for k, v in weights.items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
        for f in side:
            shutil.copy(base / f, folder / f)

    names = [f"x{i}" for i in range(experts)]
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, i])
        write(root / name, {k: v * (1 + 0.02 * rng.standard_normal(v.shape)) for k, v in ckpt.weights.items()},
              config)
    weights = dict(ckpt.weights)
    head = weights["model.embed_tokens.weight"].copy()
    head[:experts] = np.random.default_rng([seed, 1 << 16]).standard_normal((experts, head.shape[1])) * 0.5
    weights["model.embed_tokens.weight"] = head
    write(root / "router", weights, config)
    (root / "prompts.jsonl").write_text("".join(json.dumps({"slice": names[i % experts], "expert": names[i % experts],
                                                            "text": t}) + "\n" for i, t in enumerate(prompts)))
    (root / MANIFEST).write_text(json.dumps({"base": str(base), "classes": names,
                                             "experts": [{"name": n, "slice": n, "path": n} for n in names],
                                             "router": "router", "prompts": "prompts.jsonl"}, indent=2))
    return root
