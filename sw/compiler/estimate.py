"""A static bandwidth model of a compiled decode step: what the compiler reports before anything runs.

Per kernel: its HBM bytes at the tier's peak rate, or its busiest stream at
one vector per cycle, whichever is longer, plus the memory latency; plus
Program Load (one bitstream word per cycle, charged for every launch; the
runtime skips a load when the chip already holds the program), the host's
launch round trip, and reading the logits back over the host link. The
runtime measures the real figures on either backend.
"""

from hw.mem.params import HBM


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
    host_io = 4 * compiled.shape.vocab_size / float(t.memory.host_bytes_per_cycle)
    return {"cycles": kernel + load + launch_cycles + host_io, "kernel_cycles": kernel,
            "program_load_cycles": load, "launch_cycles": launch_cycles, "host_io_cycles": host_io,
            "bytes_read": read, "bytes_written": written, "kernels": len(launches)}
