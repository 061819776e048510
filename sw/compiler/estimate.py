"""A static bandwidth model of a compiled decode step: what the compiler reports before anything runs.

Per kernel: its HBM bytes at the tier's peak rate, or its busiest stream at
one vector per cycle, whichever is longer, plus the memory latency; plus
Program Load (one bitstream word per cycle, charged for every launch; the
runtime skips a load when the chip already holds the program), the host's
launch round trip, and reading the logits back over the host link. The
runtime measures the real figures on either backend. :func:`padding_cost`
prices the zero padding of sizes the array cannot take as they are.
"""

from hw.mem.params import HBM
from sw.compiler.decode import Padding


def estimate_kernel(compiled, launch):
    t = compiled.target
    m = t.memory
    wb = m.word_bytes
    vector_words = 4 * t.array.lanes / wb
    hbm = sum(s.words for s in launch.streams if s.tier == HBM) * wb
    other = {s.tier: 0 for s in launch.streams if s.tier != HBM}
    for s in launch.streams:
        if s.tier != HBM:
            other[s.tier] += s.words * wb
    longest = max(s.words / vector_words for s in launch.streams)
    memory = max([hbm / float(m.hbm.bytes_per_cycle)] + [b / float(m.tiers[k].bytes_per_cycle)
                                                         for k, b in other.items()])
    return max(memory, longest) + 2 * m.hbm.latency


def estimate_step(compiled, tp):
    """Estimated cycles and bytes of one decode step attending over ``tp`` positions."""
    t = compiled.target
    launches = compiled.buckets[tp]
    wb = t.memory.word_bytes
    kernel = sum(estimate_kernel(compiled, launch) for launch in launches)
    load = sum(len(launch.program.words) for launch in launches)
    launch_cycles = len(launches) * t.host_launch_cycles
    read = sum(s.words * wb for launch in launches for s in launch.streams if s.direction == "read")
    written = sum(s.words * wb for launch in launches for s in launch.streams if s.direction == "write")
    # Greedy decoding reads the token the argmax op leaves (one memory word), else every logit.
    host_io = (wb if compiled.token else 4 * compiled.shape.vocab_size) / float(t.memory.host_bytes_per_cycle)
    return {"cycles": kernel + load + launch_cycles + host_io, "kernel_cycles": kernel,
            "program_load_cycles": load, "launch_cycles": launch_cycles, "host_io_cycles": host_io,
            "bytes_read": read, "bytes_written": written, "kernels": len(launches)}


def _footprint(shape, sizes, weight_bytes, embed_bytes, context, tp):
    """(memory bytes, bytes streamed per token attending over ``tp``) of ``shape`` computed at ``sizes``
    (hidden, intermediate, head_dim, vocab): weights, norm gains and biases, KV caches and tables."""
    d, f, hd, v = sizes
    nh, nkv, layers = shape.num_heads, shape.num_kv_heads, shape.num_layers
    outputs = {"self_attn.q_proj": nh * hd, "self_attn.k_proj": nkv * hd, "self_attn.v_proj": nkv * hd,
               "self_attn.o_proj": d, "mlp.gate_proj": f, "mlp.up_proj": f, "mlp.down_proj": d}
    vectors = 2 * d + sum(outputs[p] for p in shape.biases)         # norm gains and biases, fp32
    layer = (d * hd * (2 * nh + 2 * nkv) + 3 * d * f) * weight_bytes + 4 * vectors
    head = v * d * weight_bytes + 4 * d                              # lm_head and the final norm
    kv = 4 * context * hd * (nh + 2 * nkv)                           # q and K rows, V blocks: per layer
    memory = layers * (layer + kv) + head + shape.vocab_size * d * embed_bytes + 2 * 4 * context * hd
    attention = 4 * hd * (nh + 2 * nh * tp)                          # q, then K and V once per query head
    return memory, layers * (layer + attention) + head + d * embed_bytes


def padding_cost(compiled):
    """What zero padding to the array's sizes costs ``compiled``: a dict with ``sizes`` ((name, true,
    padded) for each size that grew), ``memory_bytes``, ``bytes_per_token`` (streamed, at the full
    context) and ``cycles_per_token`` (those bytes at peak HBM bandwidth); None when nothing is padded."""
    shape, t = compiled.shape, compiled.target
    padding = Padding.of(shape, t.array.lanes)
    sizes = padding.padded(shape)
    if not sizes:
        return None
    streams = [s for launch in compiled.buckets[compiled.context] for s in launch.streams]
    bf16 = any(s.bf16 and not s.token_stride for s in streams)
    embed = any(s.bf16 and s.token_stride for s in streams)
    args = (2 if bf16 else 4, 2 if embed else 4, compiled.context, compiled.context)
    true = _footprint(shape, (shape.hidden_size, shape.intermediate_size, shape.head_dim, shape.vocab_size), *args)
    pad = _footprint(shape, (padding.hidden, padding.intermediate, padding.head_dim, padding.vocab), *args)
    streamed = pad[1] - true[1]
    return {"sizes": sizes, "memory_bytes": pad[0] - true[0], "bytes_per_token": streamed,
            "cycles_per_token": streamed / float(t.memory.hbm.bytes_per_cycle)}


def padding_text(compiled):
    """The summary's line on padding ('' when nothing is padded)."""
    cost = padding_cost(compiled)
    if cost is None:
        return ""
    sizes = ", ".join(f"{name} {true} -> {padded}" for name, true, padded in cost["sizes"])
    return (f"padding (zeros, invisible in results): {sizes}; costs {cost['memory_bytes']:,} bytes of memory and "
            f"{cost['bytes_per_token']:,} bytes streamed per token at {compiled.context} positions "
            f"(about {cost['cycles_per_token']:.0f} cycles at peak HBM bandwidth)")
