"""The runtime: load a compiled model onto a device, prefill and decode, and account for every cycle.

The same coroutines drive both backends (:mod:`sw.runtime.device`). A decode
step runs the launches of the compiled step in order, each the SN40L's
three commands: Program Load (skipped when the chip already holds that
bitstream), Argument Load (AGCU patterns whose bases move with the token and
position) and Execute. Who issues them is the ``orchestration``:

- ``host`` (software orchestration): the host issues each launch and pays
  ``target.host_launch_cycles``, an assumed round trip, per launch;
- ``chip`` (hardware orchestration): the host writes the token and position
  and starts the chip's sequencer, which walks the bucket's launch list
  (:mod:`sw.runtime.launch_list`); one assumed round trip per step, and the
  sequencer's own cycles between kernels, counted on chip.

After the step the host reads the logits over the host link. Cycles per token are

    kernel cycles + Program Load cycles + launch cycles (host round trips + sequencing) + logits read-back

with every part reported on its own and marked measured, modelled or
assumed (:func:`provenance`). HBM and DDR bytes per token are the tier
controllers' counts. The prompt is fed one token per step (each step
attends over the positions so far), then tokens are generated.
"""

import functools
import gc
import hashlib
import time

import numpy as np

from hw.mem.params import DDR, HBM, TIER_NAMES
from sw.errors import DecodeError  # noqa: F401  (re-exported)
from sw.runtime.trace import activity_events, event as trace_event

# Per launch (by id, with the launch and its streams to tell a reused id or replaced streams): its streams'
# patterns at token 0 and position 0, built and checked once, and their bases' steps (Session._patterns).
# Shared by every session of the process (a bench's decodes of one compiled model).
_PATTERNS = {}

# Streams -> their pattern at token 0 and position 0 (Stream.pattern), built and checked once: the launches of
# a model's context buckets share most of their streams (weights, tables), and patterns are not modified.
_STREAM_PATTERNS = {}


def _pattern_at_start(stream):
    """``stream.pattern(0, 0)``, kept in :data:`_STREAM_PATTERNS`."""
    pattern = _STREAM_PATTERNS.get(stream)
    if pattern is None:
        if len(_STREAM_PATTERNS) >= 4096:
            _STREAM_PATTERNS.clear()
        pattern = _STREAM_PATTERNS[stream] = stream.pattern(0, 0)
    return pattern


# Prompts with fewer positions before their last token run token by token even with prefill: a chunk's
# launches (about 90 host round trips) cost about as much as three decode steps (bench prefill: on 4x8 an
# 8-position chunk costs 347,147 cycles, a step 114,281; on chip 378,320 and 188,436).
PREFILL_MIN_POSITIONS = 4

# Who issues a step's kernels: the host, one round trip per launch (the paper's Fused+SO), or the chip's
# sequencer walking a launch list, one host command per step (Fused+HO).
ORCHESTRATIONS = ("host", "chip")


def check_request(compiled, prompt_ids, max_new_tokens, *, temperature=0.0, top_k=0):
    vocab = compiled.shape.vocab_size
    if not np.isfinite(temperature) or temperature < 0:
        raise DecodeError(f"temperature must be 0 (greedy) or a positive number, not {temperature}")
    if top_k < 0:
        raise DecodeError(f"top_k must be 0 (no limit) or positive, not {top_k}")
    if len(prompt_ids) == 0:
        raise DecodeError("the prompt is empty: give at least one token")
    bad = [t for t in prompt_ids if not 0 <= int(t) < vocab]
    if bad:
        raise DecodeError(f"prompt token ids {bad[:5]} are outside the vocabulary of {vocab}")
    if max_new_tokens < 0:
        raise DecodeError(f"max_new_tokens must be at least 0, not {max_new_tokens}")
    need = len(prompt_ids) + max(max_new_tokens, 1) - 1
    if need > compiled.context:
        raise DecodeError(f"the prompt of {len(prompt_ids)} tokens plus {max_new_tokens} new tokens needs {need} "
                          f"positions; the model was compiled for a context of {compiled.context} "
                          f"(compile it again with a larger --context)")


def sample(logits, *, temperature=0.0, top_k=0, rng=None):
    """Greedy (temperature 0) or temperature / top-k sampling from ``rng``."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = np.asarray(logits, np.float64) / temperature
    if not np.isfinite(z).all():
        # A temperature so small that the logits overflow: the limit is greedy.
        return int(np.argmax(logits))
    if 0 < top_k < z.size:
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    p = np.exp(z - z.max())
    return int(rng.choice(z.size, p=p / p.sum()))


class Session:
    """A compiled model loaded on a device: holds what is loaded and counts what each step costs."""

    def __init__(self, device, compiled, *, trace=False, orchestration="host"):
        if orchestration not in ORCHESTRATIONS:
            raise DecodeError(f"orchestration must be one of {', '.join(ORCHESTRATIONS)}, not {orchestration!r}")
        if orchestration == "chip" and not compiled.launch_lists:
            raise DecodeError("the compiled model has no launch lists for the chip's sequencer; compile it again")
        self.device, self.compiled, self.orchestration = device, compiled, orchestration
        self.target = compiled.target
        self.loaded_program = None
        # Per launch (by id): the device's launcher of it (Device.launcher) with its bases at token 0 and
        # position 0 and their steps, or the tries left to make one (_launched).
        self._launchers = {}
        # Program regions by name -> (tier, byte offset), from the memory map.
        self._regions = {}
        self.load_report = {}
        # Program Load locations -> programs, for the sequencer (the fast model runs the Program objects).
        mm = compiled.memory_map
        self.programs = {(mm[launch.program_region].tier, mm[launch.program_region].offset): launch.program
                         for launches in compiled.buckets.values() for launch in launches}
        # The tier controllers' counters after the latest step: each step's bytes are the difference.
        self.stats = None
        # With ``trace``, every host command of every step as sw.runtime.trace events, in cycles from the start.
        self.trace, self.clock = ([] if trace else None), 0.0
        # With ``trace``, what the device saw inside each command (Device.activity), as trace events.
        self.activity, self.recording = ([] if trace else None), False

    async def load(self, *, weights_tier="hbm"):
        """Write the memory image; with ``weights_tier="ddr"`` stage the weights from DDR with the copy engine."""
        c, m = self.compiled, self.target.memory
        mm = c.memory_map
        host_bytes, stage_cycles, staged = 0, 0, 0
        for name, words in c.image.items():
            r = mm[name]
            if weights_tier == "ddr" and r.what == "weight":
                await self.device.write(DDR, r.offset, words)
                size = -(-r.nbytes // m.word_bytes) * m.word_bytes
                stage_cycles += await self.device.copy(DDR, r.offset, HBM, r.offset, size)
                staged += r.nbytes
            else:
                await self.device.write(r.tier, r.offset, words)
            host_bytes += r.nbytes
        self.load_report = {"image_bytes": host_bytes,
                            "host_link_cycles": host_bytes / float(m.host_bytes_per_cycle),
                            "weights_tier": weights_tier, "ddr_to_hbm_bytes": staged,
                            "ddr_to_hbm_cycles": stage_cycles}
        return self.load_report

    async def reset(self):
        """Clear the KV caches for a new sequence."""
        mm = self.compiled.memory_map
        for name in self.compiled.zeroed:
            r = mm[name]
            await self.device.write(r.tier, r.offset, np.zeros(r.nbytes // 4, np.uint32))

    async def step(self, token, pos, *, greedy=False):
        """One decode step; returns (logits float32, cost dict).

        The cost's ``hbm_read`` .. ``ddr_written`` are bytes the tier
        controllers counted during the step (kernels, Program Loads, the
        launch list's fetch), not the compiled stream sizes. With ``greedy``
        and a program whose ``argmax`` op picks the token on chip, the host
        reads that one memory word (``cost["chip_token"]``: the token) and the
        logits only for the step's digest, which the chip does not pay for;
        otherwise (sampling, or logits with a NaN or ``+inf`` the chip cannot
        order: ``chip_token`` None) it reads every logit over the host link.
        """
        c, t = self.compiled, self.target
        wb = t.memory.word_bytes
        link = float(t.memory.host_bytes_per_cycle)
        tp, launches = c.bucket(pos)
        await self._begin()
        cost = {"kernel_cycles": 0, "program_load_cycles": 0, "launch_cycles": 0, "host_io_cycles": 0,
                "sequencer_cycles": 0, "kernels": 0}
        if self.orchestration == "chip":
            await self._step_on_chip(cost, token, pos, tp)
        else:
            await self._step_from_host(cost, token, pos, launches)
        await self._count_bytes(cost)
        cost["chip_token"] = None
        if greedy and c.token:
            r = c.memory_map[c.token]
            word = (await self.device.read(r.tier, r.offset, wb // 4))[:1].view(np.float32)[0]
            cost["host_io_cycles"] = wb / link
            self._record("host", "token read-back", cost["host_io_cycles"], pos=pos)
            index = -float(word)
            if np.isfinite(index) and index == int(index) and 0 <= index < c.shape.vocab_size:
                cost["chip_token"] = int(index)
        r = c.memory_map[c.logits]
        raw = await self.device.read(r.tier, r.offset, c.shape.vocab_size)
        if cost["chip_token"] is None:
            read_back = 4 * c.shape.vocab_size / link
            cost["host_io_cycles"] += read_back
            self._record("host", "logits read-back", read_back, pos=pos)
        cost["cycles"] = (cost["kernel_cycles"] + cost["program_load_cycles"] + cost["launch_cycles"]
                          + cost["host_io_cycles"])
        cost["tp"] = tp
        return raw.view(np.float32).copy(), cost

    async def prefill(self, prompt_ids):
        """Run the prompt positions ``0 .. len(prompt_ids) - 1`` as prefill chunks (:mod:`sw.compiler.prefill`).

        Returns ``(cost, positions)``: the cost dict of a step (cycles and their parts, tier bytes, ``kernels``,
        ``chunks``) and how many prompt positions the chunks covered (fewer than given where no chunk fits
        before the context ends; the caller feeds the rest as decode steps). Each chunk is host-orchestrated:
        one launch per position's embedding row copy (token and row in the chunk as its arguments), then the
        chunk's kernels with ``pos`` at the chunk's first position. A chunk's padding positions repeat the last
        given token's row; their KV rows lie past the prompt and are overwritten before any step attends to them.
        """
        c = self.compiled
        plan = c.prefill_chunks(len(prompt_ids))
        await self._begin()
        cost = {"kernel_cycles": 0, "program_load_cycles": 0, "launch_cycles": 0, "host_io_cycles": 0,
                "sequencer_cycles": 0, "kernels": 0, "chunks": len(plan)}
        covered = 0
        for start, chunk in plan:
            for row in range(chunk.block):
                token = prompt_ids[min(start + row, len(prompt_ids) - 1)]
                await self._step_from_host(cost, token, row, [c.prefill_embed])
            await self._step_from_host(cost, 0, start, chunk.launches)
            covered = min(start + chunk.block, len(prompt_ids))
        await self._count_bytes(cost)
        cost["cycles"] = cost["kernel_cycles"] + cost["program_load_cycles"] + cost["launch_cycles"]
        return cost, covered

    async def _begin(self):
        """Before a step or a prefill: the tier counters to count from, and recording on when tracing."""
        if self.stats is None:
            self.stats = await self.device.tier_stats()
        if self.trace is not None and not self.recording:
            await self.device.record(True)
            self.recording = True

    async def _count_bytes(self, cost):
        """``cost``'s ``hbm_read`` .. ``ddr_written``: the tier controllers' counts since the last step or prefill."""
        after, wb = await self.device.tier_stats(), self.target.memory.word_bytes
        for tier in ("hbm", "ddr"):
            cost[f"{tier}_read"] = wb * (after[tier]["reads"] - self.stats[tier]["reads"])
            cost[f"{tier}_written"] = wb * (after[tier]["writes"] - self.stats[tier]["writes"])
        self.stats = after

    async def _step_from_host(self, cost, token, pos, launches):
        """Each launch issued by the host: Program Load when needed, Argument Load, Execute, a round trip each."""
        c, t = self.compiled, self.target
        if self.trace is None:
            # Without a trace nothing is recorded: the clock moves as _record moves it, in the same order.
            device, host, memory_map, regions = self.device, t.host_launch_cycles, c.memory_map, self._regions
            # A device whose Program Load is a plain call (ModelDevice) is not awaited a load.
            load_now = device.program_loader()
            for launch in launches:
                self.clock += host
                if self.loaded_program != launch.program_region:
                    at = regions.get(launch.program_region)
                    if at is None:
                        r = memory_map[launch.program_region]
                        at = regions[launch.program_region] = r.tier, r.offset
                    loaded = load_now(launch.program, *at) if load_now is not None else \
                        await device.load_program(launch.program, *at)
                    cost["program_load_cycles"] += loaded
                    self.loaded_program = launch.program_region
                    self.clock += loaded
                go = self._launchers.get(id(launch))
                if go is None or go[0] is not launch or go[1][1] != tuple(launch.streams) or \
                        (go[2] is None and go[3]):
                    go = self._launched(launch, go)
                cycles = None
                if go[2] is not None:
                    _, _, run, read_bases, write_bases, read_moves, write_moves = go
                    read_bases, write_bases = read_bases.copy(), write_bases.copy()
                    for i, base, token_stride, pos_stride in read_moves:
                        read_bases[i] = base + token * token_stride + pos * pos_stride
                    for i, base, token_stride, pos_stride in write_moves:
                        write_bases[i] = base + token * token_stride + pos * pos_stride
                    cycles = run(read_bases, write_bases)
                if cycles is None:
                    cycles = await device.execute(*self._patterns(launch, token, pos))
                self.clock += cycles
                cost["kernel_cycles"] += cycles
                cost["launch_cycles"] += host
                cost["kernels"] += 1
            return
        for launch in launches:
            self._record("host", f"launch {launch.name}", t.host_launch_cycles)
            if self.loaded_program != launch.program_region:
                r = c.memory_map[launch.program_region]
                before = await self._trace_stats()
                loaded = await self.device.load_program(launch.program, r.tier, r.offset)
                cost["program_load_cycles"] += loaded
                self.loaded_program = launch.program_region
                await self._trace_activity([])
                self._record("program load", f"Program Load {launch.name}", loaded,
                             **await self._trace_bytes(before))
            reads, writes = self._patterns(launch, token, pos)
            before = await self._trace_stats()
            cycles = await self.device.execute(reads, writes)
            await self._trace_activity([launch])
            ops = [op.name for op in launch.ops]
            self._record("kernels", f"{launch.name}: {' '.join(ops)}", cycles, ops=ops, pos=pos,
                         **await self._trace_bytes(before))
            cost["kernel_cycles"] += cycles
            cost["launch_cycles"] += t.host_launch_cycles
            cost["kernels"] += 1

    def _launched(self, launch, old):
        """``(launch, its _PATTERNS entry, go, read bases, write bases, read moves, write moves)``: the device's
        launcher of ``launch`` (:meth:`Device.launcher`) with the bases at token 0 and position 0 in its order
        and, for those that move, ``(index, base, token stride, position stride)``. Where the device has none yet
        (``launch``'s plan is made by its first run): ``(launch, entry, None, tries left)``, the launch run by
        ``device.execute``, a few more tries on later steps. ``old``: the entry kept before, if any."""
        known = self._known_patterns(launch)
        tries = old[3] if old is not None and old[0] is launch and old[1] is known and old[2] is None else 3
        _, _, reads, writes, moving = known
        found = self.device.launcher(reads, writes)
        if found is None:
            entry = (launch, known, None, tries - 1)
        else:
            ins, outs, go = found
            at = ({agcu: i for i, agcu in enumerate(ins)}, {agcu: i for i, agcu in enumerate(outs)})
            moves = ([], [])
            for is_read, agcu, pattern, token_stride, pos_stride in moving:
                index = at[0 if is_read else 1].get(agcu)
                if index is not None:
                    moves[0 if is_read else 1].append((index, pattern.base, token_stride, pos_stride))
            entry = (launch, known, go, [reads[k].base for k in ins], [writes[k].base for k in outs],
                     tuple(moves[0]), tuple(moves[1]))
        if len(self._launchers) >= 4096:
            self._launchers.clear()
        self._launchers[id(launch)] = entry
        return entry

    def _patterns(self, launch, token, pos):
        """``launch.patterns(token, pos)`` from the launch's patterns built once: only the bases move with the
        token and position, so each step copies them with new bases instead of building and checking them.
        Patterns that do not move (weights, tables: strides of zero) are the same objects every step."""
        _, _, fixed_reads, fixed_writes, moving = self._known_patterns(launch)
        reads, writes = fixed_reads.copy(), fixed_writes.copy()
        for is_read, agcu, pattern, token_stride, pos_stride in moving:
            (reads if is_read else writes)[agcu] = pattern.moved(pattern.base + token * token_stride
                                                                 + pos * pos_stride)
        return reads, writes

    @staticmethod
    def _known_patterns(launch):
        """``launch``'s :data:`_PATTERNS` entry ``(launch, streams, reads, writes, moving)``: its patterns at token 0
        and position 0 by AGCU and those that move with their strides, built once per process (again where the
        launch's streams were replaced)."""
        streams = tuple(launch.streams)
        known = _PATTERNS.get(id(launch))
        if known is None or known[0] is not launch or known[1] != streams:
            # As launch.patterns: a later stream on an AGCU replaces an earlier one, in the first one's place.
            reads = {s.agcu: s for s in launch.streams if s.direction == "read"}
            writes = {s.agcu: s for s in launch.streams if s.direction == "write"}
            fixed = [{agcu: _pattern_at_start(s) for agcu, s in chosen.items()} for chosen in (reads, writes)]
            moving = [(is_read, agcu, patterns[agcu], s.token_stride, s.pos_stride)
                      for is_read, chosen, patterns in ((True, reads, fixed[0]), (False, writes, fixed[1]))
                      for agcu, s in chosen.items() if s.token_stride or s.pos_stride]
            if len(_PATTERNS) >= 4096:
                _PATTERNS.clear()
            known = _PATTERNS[id(launch)] = (launch, streams, *fixed, moving)
        return known

    async def _step_on_chip(self, cost, token, pos, tp):
        """The bucket's launch list walked by the chip's sequencer: one host command and one done per step."""
        c, t = self.compiled, self.target
        r = c.memory_map[c.launch_lists[tp]]
        self._record("host", f"launch step (sequencer, bucket {tp})", t.host_launch_cycles)
        before = await self._trace_stats()
        out = await self.device.run_list(r.tier, r.offset, r.nbytes // 4, token=token, pos=pos,
                                         programs=self.programs)
        # The resident program is whatever the list loaded last; the host's own launches must reload.
        self.loaded_program = None
        moved = await self._trace_bytes(before)
        launches = c.buckets[tp]
        await self._trace_activity(launches)
        ops = [op.name for launch in launches for op in launch.ops]
        self._record("program load", f"Program Loads ({out['program_loads']})", out["program_load_cycles"])
        self._record("sequencer", f"sequencing {out['entries']} kernels", out["sequencer_cycles"])
        self._record("kernels", f"{out['entries']} kernels: {' '.join(launch.name for launch in launches)}",
                     out["kernel_cycles"], ops=ops, pos=pos, **moved)
        cost["kernel_cycles"] += out["kernel_cycles"]
        cost["program_load_cycles"] += out["program_load_cycles"]
        cost["sequencer_cycles"] += out["sequencer_cycles"]
        cost["launch_cycles"] += t.host_launch_cycles + out["sequencer_cycles"]
        cost["kernels"] = out["entries"]

    async def _trace_activity(self, launches):
        """The device's activity in the command just run (``launches``' kernels), as trace events from now."""
        if self.activity is None:
            return
        found = await self.device.activity()
        if found is not None:
            names = [{tuple(u.pos): name for name, u in launch.program.units.items()} for launch in launches]
            labels = [f"{launch.name}: {' '.join(op.name for op in launch.ops)}" for launch in launches]
            self.activity += activity_events(found, self.clock, names=names, labels=labels)

    async def _trace_stats(self):
        return await self.device.tier_stats() if self.trace is not None else None

    async def _trace_bytes(self, before):
        """``hbm_bytes`` / ``ddr_bytes`` the controllers counted since ``before`` (traces only)."""
        if before is None:
            return {}
        after, wb = await self.device.tier_stats(), self.target.memory.word_bytes
        return {f"{tier}_bytes": wb * sum(after[tier][k] - before[tier][k] for k in ("reads", "writes"))
                for tier in ("hbm", "ddr")}

    def _record(self, track, name, cycles, **args):
        if self.trace is not None:
            self.trace.append(trace_event(track, name, self.clock, cycles, **args))
        self.clock += cycles


def provenance(backend, orchestration):
    """Where each figure of a report comes from: ``measured`` (the RTL's own counters), ``modelled`` (the
    fast model's estimate of that counter, checked against the RTL by tests), ``assumed`` (a documented
    parameter of the target) or ``derived`` (computed from the others)."""
    counted = "measured" if backend == "rtl" else "modelled"
    out = {key: counted for key in ("kernel_cycles_per_token", "program_load_cycles_per_token",
                                    "sequencer_cycles_per_token")}
    out.update({key: "measured" for key in ("hbm_bytes_per_token", "hbm_read_bytes_per_token",
                                           "hbm_written_bytes_per_token", "ddr_bytes_per_token")})
    out.update({"host_launch_cycles_per_token": "assumed", "host_io_cycles_per_token": "assumed"})
    out.update({key: "derived" for key in ("cycles_per_token", "launch_cycles_per_token",
                                          "tokens_per_s_simulated", "hbm_bandwidth_fraction",
                                          "hbm_bandwidth_fraction_in_kernels", "roofline_cycles_per_token",
                                          "roofline_fraction", "total_cycles", "prompt_cycles")})
    if backend == "model":
        # The fast model's tier counters count the words its transfers move: the RTL's controllers agree.
        out.update({key: "modelled" for key in out if key.endswith("bytes_per_token")})
    return out


def _report(compiled, costs, wall, load_report, *, backend=None, orchestration="host"):
    t = compiled.target
    peak = float(t.memory.hbm.bytes_per_cycle)
    n = len(costs)
    mean = lambda key: sum(cst[key] for cst in costs) / n
    cycles = mean("cycles")
    hbm = mean("hbm_read") + mean("hbm_written")
    return {
        "backend": backend, "mode": compiled.mode, "orchestration": orchestration, "target": t.name, "steps": n,
        "cycles_per_token": cycles,
        "kernel_cycles_per_token": mean("kernel_cycles"),
        "program_load_cycles_per_token": mean("program_load_cycles"),
        "launch_cycles_per_token": mean("launch_cycles"),
        "host_launch_cycles_per_token": mean("launch_cycles") - mean("sequencer_cycles"),
        "sequencer_cycles_per_token": mean("sequencer_cycles"),
        "host_io_cycles_per_token": mean("host_io_cycles"),
        "kernels_per_token": mean("kernels_count"),
        "tokens_per_s_simulated": t.clock_hz / cycles,
        "clock_hz": t.clock_hz,
        "hbm_bytes_per_token": hbm,
        "hbm_read_bytes_per_token": mean("hbm_read"), "hbm_written_bytes_per_token": mean("hbm_written"),
        "ddr_bytes_per_token": mean("ddr_read") + mean("ddr_written"),
        "hbm_bandwidth_fraction": hbm / (cycles * peak),
        "hbm_bandwidth_fraction_in_kernels": hbm / (mean("kernel_cycles") * peak),
        "roofline_cycles_per_token": hbm / peak,
        "roofline_fraction": hbm / peak / cycles,
        "total_cycles": sum(cst["cycles"] for cst in costs),
        "wall_s": wall,
        "load": load_report,
        "provenance": provenance(backend, orchestration),
    }


def _heap_frozen(run):
    """``run`` (a coroutine function) with the objects alive at its start left out of the garbage collector's
    passes until it ends (:func:`gc.freeze`), unless the caller froze some already.

    Those objects are the compiled model, the checkpoint's reader and the libraries imported: about 250,000 after an
    in-process compile of the default model, and a full collection over them took from 40 ms to a few hundred,
    falling inside a decode where allocation counts said (`bench speed`'s 64-token fast-model decode once ran
    at 190 tokens/s instead of about 800). Reference counting still frees what they drop; only cycles among them
    wait for the end of the call.
    """
    @functools.wraps(run)
    async def frozen(*args, **kwargs):
        if gc.get_freeze_count():
            return await run(*args, **kwargs)
        gc.freeze()
        try:
            return await run(*args, **kwargs)
        finally:
            gc.unfreeze()
    return frozen


@_heap_frozen
async def generate(device, compiled, prompt_ids, *, max_new_tokens, temperature=0.0, top_k=0, seed=0,
                   progress=None, stop_at_eos=True, weights_tier="hbm", keep_logits=False, trace=False,
                   orchestration="host", prefill=False):
    """Load ``compiled`` on ``device``, feed ``prompt_ids`` and generate up to ``max_new_tokens`` tokens.

    Returns a JSON-serialisable dict: ``tokens`` (generated ids), ``prompt_ids``,
    ``logits_sha`` (SHA-256 of every step's logits, to compare backends bit
    for bit), ``report`` (cycles, bandwidth, bytes per tier, wall-clock time)
    and ``step_cycles``; with ``keep_logits`` also ``logits``, a float32
    array of every step's logits (not serialisable); with ``trace`` also
    ``trace``, every host command's interval (:mod:`sw.runtime.trace`).
    ``orchestration`` is ``"host"`` (a round trip per kernel launch) or
    ``"chip"`` (the chip's sequencer walks the step's launch list).

    ``prefill``: run the prompt's positions before its last token as prefill chunks (a program compiled with
    ``prefill``; otherwise, or for fewer than :data:`PREFILL_MIN_POSITIONS` of them, token by token as
    always), then the last prompt token
    as a decode step. The tokens are the same either way; ``logits_sha`` and ``step_cycles`` then cover the
    decode steps only, and ``report["prefill"]`` holds the prefill's cost. ``report["prompt_cycles"]`` is
    the cycles from the start to the first generated token's logits (time to first token), either way.
    """
    prompt_ids = [int(t) for t in prompt_ids]
    check_request(compiled, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k)
    start = time.perf_counter()
    session = Session(device, compiled, trace=trace, orchestration=orchestration)
    load_report = await session.load(weights_tier=weights_tier)
    await session.reset()
    rng = np.random.default_rng(seed)
    eos = compiled.shape.eos_token_id
    total = len(prompt_ids) + max(max_new_tokens, 1) - 1
    digest = hashlib.sha256()
    costs, all_logits, generated = [], [], []
    first, prefill_cost = 0, None
    try:
        if prefill and len(prompt_ids) - 1 >= PREFILL_MIN_POSITIONS and compiled.prefill:
            prefill_cost, first = await session.prefill(prompt_ids[:-1])
        token = prompt_ids[first]
        for pos in range(first, total):
            logits, cost = await session.step(token, pos, greedy=temperature <= 0)
            chosen = cost.pop("chip_token")
            cost["kernels_count"] = cost.pop("kernels")
            costs.append(cost)
            digest.update(logits.tobytes())
            if keep_logits:
                all_logits.append(logits)
            if progress:
                progress(pos + 1, total)
            if pos + 1 < len(prompt_ids):
                token = prompt_ids[pos + 1]
                continue
            if max_new_tokens == 0:
                break
            token = chosen if chosen is not None else sample(logits, temperature=temperature, top_k=top_k, rng=rng)
            generated.append(token)
            if len(generated) == max_new_tokens or (stop_at_eos and token == eos):
                break
    finally:
        if session.recording:
            await device.record(False)
    wall = time.perf_counter() - start
    report = _report(compiled, costs, wall, load_report, backend=device.backend, orchestration=orchestration)
    prompt_steps = len(prompt_ids) - first
    report["prompt_cycles"] = (prefill_cost["cycles"] if prefill_cost else 0) + sum(
        cst["cycles"] for cst in costs[:prompt_steps])
    report["prompt_steps"] = min(prompt_steps, len(costs))
    if prefill_cost:
        report["prefill"] = {"positions": first, **{k: v for k, v in prefill_cost.items() if k != "sequencer_cycles"}}
    result = {"prompt_ids": prompt_ids, "tokens": generated, "logits_sha": digest.hexdigest(), "report": report,
              "step_cycles": [cst["cycles"] for cst in costs],
              "step_kernel_cycles": [cst["kernel_cycles"] for cst in costs]}
    if keep_logits:
        result["logits"] = np.stack(all_logits)
    if trace:
        result["trace"] = session.trace + session.activity
    return result
