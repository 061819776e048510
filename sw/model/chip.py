"""Fast model of the whole chip: kernels launched as on the RTL chip, on the tile and memory models.

:class:`ChipModel` offers the kernel-level commands of
:class:`sw.runtime.chip.ChipDriver`, synchronously: memory is two
:class:`FlatMemory` tiers, AGCU transfers move the same bytes as the RTL
(:mod:`sw.model.memory_units`), and the tile array runs on
:class:`ArrayModel`, so outputs are bit-identical to the RTL chip's.

Cycle estimate of a kernel, from the start pulse to the last AGCU done:

- every read stream starts at once; the words of all streams on one tier
  are served round-robin by that tier's :class:`TierModel`, so streams share
  its bandwidth and pay its latency; a stream reaches the fabric
  ``AGCU_READ_CYCLES`` after its words' responses;
- the array model runs on those arrival times;
- as on the RTL, an AGCU read takes a credit per request and gets it back
  when the fabric takes the word from its response buffer, so a stream runs
  at most ``agcu_outstanding`` words (and what the FIFOs to its sinks hold)
  ahead of its slowest sink. Where the round-robin service breaks that, the
  tier serves, round-robin, only the requests with a credit, the sinks'
  readiness taken from the array model's timing (their other inputs), until
  the two agree (:meth:`ChipModel._credited`); a stream whose consumer starts
  late then holds its credits and leaves the tier to the others;
- each output's last word is written back, done ``QUEUE_CYCLES + latency``
  later plus ``AGCU_WRITE_CYCLES``;
- a read whose pattern waits for a write of the kernel (``Pattern.after``)
  reads memory after that write has stored its words, and its stream is
  offered ``AGCU_GATE_CYCLES`` after the write is done, alone on its tier
  (with the other reads gated at that cycle; ungated streams still held by
  their credits then are not counted): the array model then runs again on
  its data. A write that itself needs the gated read's data would
  never finish on the chip; the model refuses such a launch.
"""

import dataclasses
import math
import os
import re
import sys

import numpy as np

from facts.latency import QUEUE_CYCLES
from hw.mem.params import TIER_NAMES
from sw.model import credit, memory_units, plan_cache
from sw.model import pcu as pcu_model
from sw.model.array import ArrayModel, config_repr
from sw.model.kept import kept
from sw.model.loop import execute_looped
from sw.model.memory import FlatMemory, MemoryRangeError, SparseMemory, TierModel
from sw.errors import LaunchError

# Cycles between the start pulse and a first read request, and from a read
# response to its word being offered to the fabric (request register, response
# buffer); from an output's last word to its write request. Calibrated on the
# chip testbench's kernels (cosim/tb/test_chip.py checks the estimate).
AGCU_START_CYCLES = 2
AGCU_READ_CYCLES = 3
AGCU_WRITE_CYCLES = 3
# Cycles a read gated on a write starts after that write's done (the cycle the kernel's end counts for it),
# beyond the start path an ungated read pays from the start pulse: none. The chip unit's gated read-back
# (cosim/tb/test_device.py) is within 10% of the RTL with it.
AGCU_GATE_CYCLES = 0
# Rounds of the read-credit fixed point (ChipModel._credited) at most, and a cycle no stream waits for.
_CREDIT_ROUNDS = 8
_NEVER = -(1 << 62)

# (memory parameters, each input's tier and words) -> arrivals: the timing is data-independent, so every
# model in the process (fused and unfused, a sweep's points) computes a launch's arrivals once.
_ARRIVALS = {}
# Built programs -> their ArrayModel, and (memory parameters, program, launch shapes) -> a launch's plan
# (ChipModel._plan): neither depends on a chip's memory contents, so every model in the process shares them.
_ARRAYS = {}
_PLANS = {}
# (plan, kernels, bf16 halves, tiers' shapes) -> the plan's compiled sequence without its buffers
# (ChipModel._sequence_ops): the same for every chip of the process.
_SEQUENCES = {}
# Plan (by id, with the plan) -> the name of its entry in the launch-plan cache, written once its flat sequence is
# made (ChipModel._sequence, sw.model.plan_cache).
_UNSTORED = {}
# Program -> (program, its fingerprint): see _fingerprint.
_FINGERPRINTS = {}
# (program, read and write patterns by AGCU, by identity) -> ChipModel.launcher's look-up of the launch's plan, for every
# chip of the process (see ChipModel._launch_plan).
_LAUNCH_PLANS = {}
_QUOTED = re.compile(r"'([^'\\]*)'")


def _fingerprint(prog):
    """What the fast model takes from ``prog``, with the program's own names (units, connections, host ports)
    replaced by their places in order (:func:`_find_fingerprint`), or None where a repr may not show everything
    (numpy elides long arrays).

    Programs with equal fingerprints differ only in those names (a model's layers, built from one template): the
    fast model runs them alike, so a launch plan made for one replays the other (:meth:`ChipModel._execute_one`).
    """
    return kept(_FINGERPRINTS, prog, _find_fingerprint)


# The fields _find_fingerprint takes apart, per class name: it falls back to the whole repr for any other shape.
_NAMED_FIELDS = {"Unit": ("name", "kind", "pos", "config"), "Connection": ("name", "network", "source", "sinks"),
                 "Endpoint": ("node", "port"),
                 "MemoryPort": ("name", "direction", "network", "side", "col", "port", "top")}
_PROGRAM_FIELDS = ("params", "words", "units", "connections", "routing", "host_inputs", "host_outputs", "tail_ops",
                   "post_ops", "endpoints", "iterations")


def _find_fingerprint(prog):
    """:func:`_fingerprint`'s answer, found: ``(places, text, parts)``. ``places`` holds the places of the names in
    each field that holds one (dict keys, unit, connection and host port names, endpoint nodes); a name not in the
    program's own (an endpoint's node) stays itself, a string where the places are integers. ``parts`` are the
    ``repr`` of the parameters, of each unit's configuration and of each PCU's tail functions
    (:func:`sw.model.array.config_repr`, kept per object), ``text`` the ``repr`` of everything else: every field
    of the program but its routing, of which the model takes only each connection's hops to each of its sinks
    (:meth:`ArrayModel._wiring`), so those stand for it. A program whose classes have other fields than these gets
    its whole ``repr`` with every name replaced (:func:`_renamed_repr`).
    """
    names = {}
    for group in (prog.units, [c.name for c in prog.connections], prog.host_inputs, prog.host_outputs):
        for name in group:
            names.setdefault(name, len(names))
    try:
        routes = prog.routing.routes
        hops = [[routes[c.name].hops(prog.mesh_position(sink)) for sink in c.sinks] for c in prog.connections]
    except (KeyError, TypeError, AttributeError):
        return None
    place = names.get
    try:
        fields = tuple(vars(prog))
        units, connections = prog.units.values(), prog.connections
        ports = (*prog.host_inputs.values(), *prog.host_outputs.values())
        kinds = {type(x) for group in (units, connections, ports) for x in group}
        kinds.update(type(e) for c in connections for e in (c.source, *c.sinks))
        if fields != _PROGRAM_FIELDS or not all(_taken_apart(kind) for kind in kinds):
            return _renamed_repr(prog, names, hops)
        places = (tuple(place(k, k) for k in prog.units), tuple(place(u.name, u.name) for u in units),
                tuple((place(c.name, c.name), place(c.source.node, c.source.node),
                       tuple(place(e.node, e.node) for e in c.sinks)) for c in connections),
                tuple(place(k, k) for k in prog.host_inputs), tuple(place(k, k) for k in prog.host_outputs),
                tuple(place(p.name, p.name) for p in ports), tuple(place(k, k) for k in prog.endpoints))
        text = repr((type(prog).__name__, hops, prog.words, [(u.kind, u.pos) for u in units],
                     [(c.network, c.source.port, [e.port for e in c.sinks]) for c in connections],
                     [(p.direction, p.network, p.side, p.col, p.port, p.top) for p in ports],
                     list(prog.endpoints.values()), list(prog.tail_ops), list(prog.post_ops), prog.iterations))
        # Each unit's configuration, the parameters and each PCU's tail functions as their own reprs, kept per
        # object (the parameters and tails are shared by a model's programs; a unit's model is found by its
        # configuration's, array._unit_model).
        parts = (config_repr(prog.params), tuple(config_repr(u.config) for u in units),
                 tuple(config_repr(ops) if type(ops) is tuple else repr(ops) for ops in prog.tail_ops.values()),
                 tuple(config_repr(ops) if type(ops) is tuple else repr(ops) for ops in prog.post_ops.values()))
    except (TypeError, AttributeError):
        return _renamed_repr(prog, names, hops)
    if "..." in text or any("..." in c for c in (parts[0], *parts[1], *parts[2], *parts[3])):
        return None
    return places, text, parts


# (class, _NAMED_FIELDS' entry for its name) -> whether _find_fingerprint takes its instances apart.
_TAKEN_APART = {}


def _taken_apart(kind):
    """Whether :func:`_find_fingerprint` takes instances of class ``kind`` apart: a dataclass whose fields are
    those ``_NAMED_FIELDS`` names for it (a dataclass's repr shows its fields alone, so these are all it shows)."""
    named = _NAMED_FIELDS.get(getattr(kind, "__name__", None))
    known = _TAKEN_APART.get((kind, named))
    if known is None:
        try:
            known = tuple(f.name for f in dataclasses.fields(kind)) == named
        except TypeError:
            known = False
        _TAKEN_APART[(kind, named)] = known
    return known


def _renamed_repr(prog, names, hops):
    """The ``repr`` of every field of ``prog`` but its routing (``hops`` for it), with the program's own names
    replaced by their places (every other string stays quoted and the places are unquoted, so the renaming is one
    to one); None where the repr elides."""
    text = repr((type(prog).__name__, hops) + tuple((f.name, getattr(prog, f.name)) for f in dataclasses.fields(prog)
                                                   if f.name != "routing"))
    if "..." in text:
        return None
    # Outside quotes, then a quoted string's contents, in turn.
    parts = _QUOTED.split(text)
    parts[1::2] = [f"#{names[q]}" if q in names else f"'{q}'" for q in parts[1::2]]
    return "".join(parts)


# (tier parameters, word bytes, credits, streams' words, vectors and buffered words, their sinks' readiness as
# bytes) -> _credit_responses' responses (not to modify): the same streams recur in other programs' launches.
_CREDITS = {}


# (tier parameters, word bytes, streams) -> the tier's response cycles so far for that many streams offered
# round-robin from AGCU_START_CYCLES, as a list and an array: service is causal, so fewer words are a prefix.
_SERVICE = {}


def _service(tier, word_bytes, streams, total):
    """Response cycles of the first ``total`` requests of ``streams`` streams offering a word each a cycle (a list,
    maybe longer, not to modify)."""
    return _served(tier, word_bytes, streams, total)[0]


def _service_array(tier, word_bytes, streams, total):
    """:func:`_service`'s first ``total`` cycles as an int64 array (not to modify)."""
    return _served(tier, word_bytes, streams, total)[1][:total]


def _served(tier, word_bytes, streams, total):
    """(:func:`_service`'s list, the same as an int64 array), kept."""
    known = _SERVICE.get((tier, word_bytes, streams))
    if known is None or len(known[0]) < total:
        times = _round_robin_service(tier, word_bytes, streams, max(total, 2 * len(known[0]) if known else 0))
        array = np.array(times, np.int64)
        array.flags.writeable = False
        known = _SERVICE[(tier, word_bytes, streams)] = times, array
    return known


def _round_robin_service(tier, word_bytes, streams, total):
    """:func:`_service` of ``total`` requests, found: :meth:`TierModel.service` of requests offered at
    ``AGCU_START_CYCLES + k // streams``, or the same responses from the compiled credit service
    (:func:`sw.model.credit.responses`: as many streams, of equal length and a credit for every word, are served
    round-robin a word a cycle each, request k at that cycle) where it runs."""
    per = -(-total // streams)
    model = TierModel(tier, word_bytes=word_bytes)
    found = credit.responses([(per, per, np.full(per, _NEVER, np.int64), 0)] * streams, per, tier.queue_depth,
                             tier.latency, model.gain, model.cost, AGCU_START_CYCLES, AGCU_READ_CYCLES, QUEUE_CYCLES)
    if found is None:
        return model.service((AGCU_START_CYCLES + np.arange(total) // streams).tolist())
    # The streams' responses one after the other, per words each: word k of the service is stream k % streams's
    # word k // streams.
    return found[0].reshape(streams, per).T.reshape(-1)[:total].tolist()


def _round_robin(counts):
    """Per stream, the positions of its words in a round-robin service of streams of ``counts`` words: word j of
    stream k follows every word of the rounds before j (``sum(min(m, j))``) and the streams before k still in
    round j."""
    counts = [int(c) for c in counts]
    if not counts:
        return []
    # Streams still served in each round, and the words of all the rounds before each.
    live = np.zeros(max(counts), np.int64)
    for c in counts:
        live[:c] += 1
    before = np.zeros(len(live) + 1, np.int64)
    np.cumsum(live, out=before[1:])
    order = []
    for k, c in enumerate(counts):
        at = before[:c].copy()
        for m in counts[:k]:
            at[:m] += 1
        order.append(at)
    return order


# (tier parameters, word bytes, credits, streams' words, their vectors) -> _credit_checks' answer.
_CREDIT_CHECKS = {}


def _credit_checks(tier, word_bytes, outstanding, counts, vectors):
    """What :meth:`ChipModel._runs_into_credits` needs of streams of ``counts`` words and ``vectors`` vectors served
    round-robin, whatever their sinks' readiness, as a function of a stream's index, each stream's made when first
    asked for (the check stops at the first stream that runs into its credits): None where the stream never holds
    more words than its credits, else (the cycle each vector is in the AGCU's buffer, its index, and for each word
    past the first ``outstanding`` that waits for a vector: that vector, and the cycle the word is requested
    without credits)."""
    made, shared = {}, []

    def check(i):
        if i not in made:
            words = counts[i]
            if words <= outstanding:
                made[i] = None
                return None
            if not shared:
                shared.extend((_round_robin(counts), _service_array(tier, word_bytes, len(counts), sum(counts))))
            orders, times = shared
            resp = times[orders[i]]
            last_word, frees = _vector_words(words, vectors[i])
            v = frees[:words - outstanding]
            waits = v >= 0
            made[i] = (resp[last_word] + AGCU_READ_CYCLES, np.arange(vectors[i]), v[waits],
                       (resp[outstanding:] - tier.latency - QUEUE_CYCLES)[waits])
        return made[i]
    return check


def _vector_words(words, vectors):
    """Per vector, its last word; per word, the vector whose hand-over frees the word's buffer slot (-1: at once,
    for a word gathered into a vector of several)."""
    k = np.arange(vectors)
    j = np.arange(words)
    return np.minimum(words - 1, -(-(k + 1) * words // vectors) - 1), np.minimum(vectors - 1,
                                                                                 (j + 1) * vectors // words - 1)


def _credit_service(tier, word_bytes, streams, outstanding):
    """Response cycles of AGCU read streams on one tier, each holding at most ``outstanding`` words between its
    request and the fabric taking them (the AGCU's credits): :func:`_credit_service_py`'s loop compiled
    (:mod:`sw.model.credit`, the same responses), or that function itself where the compiled loop is not
    available or ``OPENRDU_NO_CEXT=1``.
    """
    model = TierModel(tier, word_bytes=word_bytes)
    resp = credit.service(streams, outstanding, tier.queue_depth, tier.latency, model.gain, model.cost,
                          AGCU_START_CYCLES, AGCU_READ_CYCLES, QUEUE_CYCLES)
    return _credit_service_py(tier, word_bytes, streams, outstanding) if resp is None else resp


# (tier parameters, word bytes) -> the tier's token bucket (gain, cost).
_BUCKETS = {}


def _bucket(tier, word_bytes):
    """:class:`TierModel`'s token bucket ``(gain, cost)`` for ``tier``, kept (a TierModel makes a memory too)."""
    known = _BUCKETS.get((tier, word_bytes))
    if known is None:
        model = TierModel(tier, word_bytes=word_bytes)
        known = _BUCKETS[(tier, word_bytes)] = model.gain, model.cost
    return known


def _credit_responses(tier, word_bytes, streams, outstanding):
    """:func:`_credit_service`'s responses, per stream an int64 array (a view of one) where the compiled loop runs:
    :meth:`ChipModel._credited` takes a few cycles of each, not every one as Python integers."""
    gain, cost = _bucket(tier, word_bytes)
    found = credit.responses(streams, outstanding, tier.queue_depth, tier.latency, gain, cost,
                             AGCU_START_CYCLES, AGCU_READ_CYCLES, QUEUE_CYCLES)
    if found is None:
        return _credit_service_py(tier, word_bytes, streams, outstanding)
    out, ends = found
    return [out[a:b] for a, b in zip([0] + ends[:-1], ends)]


def _credit_service_py(tier, word_bytes, streams, outstanding):
    """Response cycles of AGCU read streams on one tier, each holding at most ``outstanding`` words between its
    request and the fabric taking them (the AGCU's credits), in Python (``credit.c`` is the same loop in C).

    ``streams``: per stream ``(words, vectors, ready, held)``: ``ready`` (vectors,) the earliest cycle its sinks
    let the fabric take each vector (``_NEVER`` where nothing holds it); ``held`` its first words already in the
    AGCU's buffer at the start (offered to the fabric at cycle 0, no request of the tier). Each AGCU offers a
    request a cycle from ``AGCU_START_CYCLES`` once it has a credit; the tier takes the eligible ones round-robin (the next stream
    after the last served among those that could be accepted first) under the controller's rules
    (:meth:`TierModel.service`). Returns per stream its words' response cycles.
    """
    model = TierModel(tier, word_bytes=word_bytes)
    # TierModel.service's rules inlined, as there (a call per word costs a third more time here);
    # tests/test_model_replay.py holds the two to the same responses.
    depth, latency, gain, cost = tier.queue_depth, tier.latency, model.gain, model.cost
    tokens, time, last_issue, issued = cost, -1, -1, []
    # Per stream: its responses so far, words, and per word the vector freeing its credit (-1: none); per
    # vector its last word, the cycle its sinks are ready and, as found, the cycle the fabric took it.
    resp, words_of, frees_of, last_of, ready_of, popped_of = [], [], [], [], [], []
    for words, vectors, ready, held in streams:
        last_word, frees = _vector_words(words, vectors)
        # Per word j: the vector whose hand-over returns the credit word j needs (-1: none).
        frees = [-1] * min(outstanding, words) + frees[:max(words - outstanding, 0)].tolist()
        # Words in the buffer already reach the fabric at cycle 0: a response AGCU_READ_CYCLES before it.
        resp.append([-AGCU_READ_CYCLES] * held)
        words_of.append(words)
        frees_of.append(frees)
        last_of.append(last_word.tolist())
        ready_of.append(ready.tolist())
        popped_of.append([])

    def due_after(s, offer):
        """When stream ``s`` may offer its next word, its previous offer at ``offer``: a cycle later, and once
        the fabric has taken the vector that frees the buffer slot of the word ``outstanding`` before it
        (vectors leave in order, each once its last word is there). Inlined in the loop below, as it runs
        once a word."""
        out, last_word, ready, popped = resp[s], last_of[s], ready_of[s], popped_of[s]
        nxt = offer + 1
        v = frees_of[s][len(out)]
        if v >= 0:
            while len(popped) <= v:
                k = len(popped)
                at = out[last_word[k]] + AGCU_READ_CYCLES
                if popped and popped[-1] >= at:
                    at = popped[-1] + 1
                if ready[k] > at:
                    at = ready[k]
                popped.append(at)
            if popped[v] >= nxt:
                nxt = popped[v] + 1
        return nxt

    # The streams still to serve, and per stream of them (same positions, removed together): when it may
    # offer next, its responses, words, credit frees, vectors' last words, readiness and hand-over cycles.
    live = [k for k, (words, _, _, held) in enumerate(streams) if words > held]
    dues = [due_after(k, AGCU_START_CYCLES - 1) for k in live]
    outs, words_l, frees_l, last_l, ready_l, popped_l = ([per[k] for k in live] for per in
                                                          (resp, words_of, frees_of, last_of, ready_of, popped_of))
    rr = n = 0
    alive = len(live)
    # Names the loop reads once a word, bound locally.
    queue_cycles, read_cycles, never, issue_word = QUEUE_CYCLES, AGCU_READ_CYCLES, _NEVER, issued.append
    while alive:
        i = rr if rr < alive else 0
        # The tier takes the first stream from rr on that has offered by t = max(soonest offer, the queue's
        # free slot). When some stream has offered by the free slot, t is the free slot and the first such
        # stream from rr on is the one, so the soonest offer is looked for only when none has (or while the
        # queue has a free slot from the start).
        if n >= depth:
            free = issued[n - depth]
            if dues[i] > free:
                j = i + 1 if i + 1 < alive else 0
                while j != i and dues[j] > free:
                    j = j + 1 if j + 1 < alive else 0
                if j != i:
                    i = j
                else:
                    t = min(dues)
                    while dues[i] > t:
                        i = i + 1 if i + 1 < alive else 0
        else:
            free = t = min(dues)
            while dues[i] > t:
                i = i + 1 if i + 1 < alive else 0
        offer = dues[i]
        issue = (offer if offer > free else free) + queue_cycles
        if issue <= last_issue:
            issue = last_issue + 1
        have = tokens
        if tokens < cost:
            need = -(-(cost - tokens) // gain)
            if issue > time:
                have = tokens + gain * (issue - time if issue - time < need else need)
            if have < cost:
                issue += -(-(cost - have) // gain)
                have = tokens + gain * (issue - time if issue - time < need else need) if issue > time else tokens
        tokens = have + gain - cost
        time = issue + 1
        last_issue = issue
        issue_word(issue)
        n += 1
        out = outs[i]
        out.append(issue + latency)
        served = len(out)
        if served == words_l[i]:
            for per in (dues, outs, words_l, frees_l, last_l, ready_l, popped_l):
                del per[i]
            alive -= 1
            rr = i
            continue
        rr = i + 1
        # due_after(s, offer), inlined.
        nxt = offer + 1
        v = frees_l[i][served]
        if v >= 0:
            popped = popped_l[i]
            k = len(popped)
            if k <= v:
                last_word, ready = last_l[i], ready_l[i]
                prev = popped[-1] if k else never
                while k <= v:
                    at = out[last_word[k]] + read_cycles
                    if prev >= at:
                        at = prev + 1
                    if ready[k] > at:
                        at = ready[k]
                    popped.append(at)
                    prev = at
                    k += 1
            if popped[v] >= nxt:
                nxt = popped[v] + 1
        dues[i] = nxt
    return resp


# Offsets arrays (by id, with the array: nest_rows makes each once) -> _grid's answer.
_GRIDS = {}


def _grid(offsets):
    """``(first, bounds, strides)`` with ``offsets`` (an int64 array of word offsets) the words ``first + sum_k i_k
    strides[k]`` for ``i`` over ``bounds`` in C order (outermost first), at most three levels, every stride at least
    0; None where they are not such a grid. Kept per array."""
    return kept(_GRIDS, offsets, _find_grid)


def _find_grid(offsets):
    """:func:`_grid`'s answer, found: the innermost run of equal steps, then the runs' starts the same way."""
    dims, rest = [], np.asarray(offsets, np.int64)
    while rest.size > 1:
        if len(dims) == 3:
            return None
        step = int(rest[1] - rest[0])
        breaks = np.flatnonzero(np.diff(rest) != step)
        run = int(breaks[0]) + 1 if breaks.size else rest.size
        if step < 0 or rest.size % run:
            return None
        dims.append((run, step))
        rest = rest.reshape(-1, run)[:, 0]
    if not rest.size:
        return None
    bounds, strides = tuple(b for b, _ in reversed(dims)), tuple(s for _, s in reversed(dims))
    index = np.indices(bounds, np.int64).reshape(len(bounds), -1) if bounds else np.zeros((0, 1), np.int64)
    if not np.array_equal(int(rest[0]) + np.asarray(strides, np.int64) @ index, offsets):
        return None
    return int(rest[0]), bounds, strides


def _op_reads(op):
    """The slots a flat sequence's op (a tuple for ``fastfp.seq_build``, see ``ChipModel._sequence_ops``) reads."""
    code = op[0]
    if code in (1, 3):
        # Slot 12 is the offsets slot (-1: the grid, no slot); 13 is the row count.
        return (op[2],) + ((op[12],) if op[12] >= 0 else ()) + ((op[1],) if code == 3 else ())
    if code in (2, 4):
        return (op[2],)
    if code == 5:
        return (op[2], op[3])
    if code == 6:
        return (op[1], op[2])
    if code == 7:
        return (op[1], *op[5:10], op[15], op[16])
    raise ValueError(f"unknown op {code}")


def _array_model(prog):
    return kept(_ARRAYS, prog, ArrayModel)


def _tier_memory(name, capacity):
    """A :class:`FlatMemory` tier, or a :class:`SparseMemory` one where the system will not reserve
    ``capacity`` bytes at once (a user's target with tens of GiB of DDR); both hold the same bytes."""
    try:
        return FlatMemory(name, capacity)
    except MemoryError:
        return SparseMemory(name, capacity)


class ChipModel:
    """The chip's memory and kernels on the fast models.

    Parameters
    ----------
    array_params, mem_params, agcus
        As given to :class:`hw.chip.Chip`.
    """

    def __init__(self, array_params, mem_params, agcus):
        self.array_params, self.mem_params, self.agcus = array_params, mem_params, tuple(agcus)
        self.memory = {index: _tier_memory(name, mem_params.tiers[index].capacity)
                       for index, name in TIER_NAMES.items()}
        self.program = None
        # Words each tier performed for kernels and copies, and refused: the controllers' counters.
        self.stats = {name: {"reads": 0, "writes": 0, "errors": 0} for name in TIER_NAMES.values()}
        # Per program: its host ports' AGCUs and the launch plans seen, by their patterns' shapes (see _replay).
        self._launches = {}
        self._rows = {}
        # Per plan replayed (by id, with the plan to tell a reused id): its flat sequence or None (_flat).
        self._flats = {}
        # Stream shapes -> arrivals, for this model's memory parameters (hashing them costs more than a lookup).
        self._known = {}
        # With a list here (Device.record), each kernel run appends what its units and streams did (activity).
        self.activity = None
        self._timed, self._credit_words, self._tier_words = None, {}, {}

    def count(self, tier, what, words):
        """Add ``words`` to the ``what`` counter (``"reads"``, ``"writes"``, ``"errors"``) of ``tier``."""
        self.stats[TIER_NAMES[tier]][what] += int(words)

    def agcu_at(self, side, col):
        return self.agcus.index((side, col))

    def load_program(self, program):
        """Program Load of a built :class:`~sw.tile.kernel.Program`; returns the loader's cycles (one per word)."""
        self.program = program
        return len(program.words)

    def execute(self, reads, writes, *, held=None):
        """Run the loaded program with AGCU ``reads`` / ``writes`` (index -> Pattern, as the driver takes).

        Returns ``(cycles, outputs)``: the estimate and each host output's ``(data, last)``; the outputs
        are also written to memory where the write patterns say. A pattern with words outside its tier
        raises :class:`~sw.model.memory.MemoryRangeError` once the kernel has run, as the RTL reports it
        after ``kernel_done``: such words read as zeros and are not written.

        The timing and the kernel's plan depend on the patterns' tiers and loop nests, not on their bases
        or the data: a launch of the same shapes as an earlier one replays that one's plan.

        ``held`` (AGCU -> words): reads that start with that many words already in their AGCU's buffer,
        fetched before the start pulse (a later iteration of a looped kernel, :mod:`sw.model.loop`); at most
        ``agcu_outstanding``, ungated reads only.
        """
        if self.program is None:
            raise RuntimeError("execute before load_program")
        prog = self.program
        if prog.iterations > 1:
            return execute_looped(self, reads, writes)
        if self.activity is None:
            return self._execute_one(prog, reads, writes, held)
        # Recording: run step by step, which leaves the tiers' word by word service (_kernel_activity).
        cycles, outputs, _ = self._execute(reads, writes, held)
        record = self._kernel_activity(prog, reads, writes, cycles)
        record["held"] = {k: int(w) for k, w in (held or {}).items() if w}
        self.activity.append(record)
        return cycles, outputs

    def launcher(self, reads, writes):
        """The loaded program's launch with patterns of the shapes of ``reads`` / ``writes`` (AGCU -> Pattern) as a
        function of their bases alone, for a caller that runs it again with only the bases moved (the runtime's
        steps): ``(ins, outs, go)``, or None where the launch has no plan yet (it is made by the launch's first
        :meth:`execute`), the program is looped or a pattern is missing.

        ``ins`` / ``outs`` are the AGCUs of the program's host inputs and outputs in order; ``go(read_bases,
        write_bases)`` (byte offsets in that order) replays the plan as :meth:`execute` would with the patterns
        moved there and returns its cycles (the outputs are in memory), or None with nothing done where
        :meth:`execute` must run it: another program is loaded, recording is on, a base takes a word out of its
        tier, a tier was replaced, or a unit's error in another program's plan (see :meth:`_execute_one`).
        """
        prog = self.program
        if prog is None or prog.iterations > 1:
            return None
        found = self._launch_plan(prog, reads, writes)
        if found is None:
            return None
        ins, outs, plan, names = found

        def go(read_bases, write_bases):
            if self.program is not prog or self.activity is not None:
                return None
            try:
                done = self._replay(plan, read_bases, write_bases, False)
            except ValueError:
                if names is None:
                    raise
                return None
            return None if done is None else done[0]
        return ins, outs, go

    def _launch_plan(self, prog, reads, writes):
        """``(ins, outs, plan, names)`` of :meth:`launcher`: ``prog``'s host ports' AGCUs and the plan of a launch
        with the patterns ``reads`` / ``writes`` (:meth:`_found_plan`), or None where a pattern is missing or there
        is no plan yet.

        Kept for the process by the program's and the patterns' identities (the runtime hands every session the
        same pattern objects for a launch at token 0 and position 0), so a new chip's launchers need not hash the
        patterns' shapes and look the plan up again: a hit needs the same program and pattern objects at those
        AGCUs, the same memory parameters and AGCUs, and the same process-wide plans (a plan, once made, stays
        right for its shapes)."""
        at = (id(prog), id(reads), id(writes))
        known = _LAUNCH_PLANS.get(at)
        if known is not None:
            # The entry holds prog, reads and writes, so the ids in its key are theirs as long as it is kept.
            _, _, _, params, agcus, plans, found, read_pats, write_pats = known
            ins, outs = found[:2]
            if plans is _PLANS and params == self.mem_params and agcus == self.agcus and \
                    all(reads.get(k) is p for k, p in zip(ins, read_pats)) and \
                    all(writes.get(k) is p for k, p in zip(outs, write_pats)):
                return found
        ins, outs, plans = self._ports(prog)
        if not (all(k in reads for k in ins) and all(k in writes for k in outs)):
            return None
        read_pats, write_pats = [reads[k] for k in ins], [writes[k] for k in outs]
        found = self._found_plan(prog, plans, self._key(read_pats, write_pats, None))
        if found is None:
            return None
        found = tuple(ins), tuple(outs), *found
        if len(_LAUNCH_PLANS) >= 4096:
            _LAUNCH_PLANS.clear()
        _LAUNCH_PLANS[at] = (prog, reads, writes, self.mem_params, self.agcus, _PLANS, found, tuple(read_pats),
                             tuple(write_pats))
        return found

    def _ports(self, prog):
        """``(AGCUs of prog's host inputs, of its host outputs, its plans by launch shapes)``, kept per program."""
        return kept(self._launches, prog, lambda prog: (
            [self.agcu_at(p.side, p.col) for p in prog.host_inputs.values()],
            [self.agcu_at(p.side, p.col) for p in prog.host_outputs.values()], {}))

    @staticmethod
    def _key(read_pats, write_pats, held):
        """A launch's shapes: what its plan depends on (the patterns less their bases, and ``held``). A plan is
        looked up by these before :meth:`_gates` checks the gates (only a launch that makes a plan runs it), so
        a gated read's ``lag`` is among them: a lagged launch finds no unlagged launch's plan and is refused."""
        return (tuple((p.tier, p.nest, p.bf16, p.after, p.lag) for p in read_pats),
                tuple((p.tier, p.nest) for p in write_pats), tuple(sorted((held or {}).items())))

    def _found_plan(self, prog, plans, key):
        """``(plan, names)`` of a launch of ``prog`` with shapes ``key`` from its plans, or one made before
        (:meth:`_known_plan`, then kept in ``plans``); None where there is none."""
        found = plans.get(key)
        if found is None:
            found = self._known_plan(prog, key)
            if found is not None:
                plans[key] = found
        return found

    def _execute_one(self, prog, reads, writes, held):
        ins, outs, plans = self._ports(prog)
        if all(k in reads for k in ins) and all(k in writes for k in outs):
            read_pats, write_pats = [reads[k] for k in ins], [writes[k] for k in outs]
            key = self._key(read_pats, write_pats, held)
            found = self._found_plan(prog, plans, key)
            entry = None
            if found is None:
                entry = self._entry_name(prog, key, held)
                found = self._stored_plan(prog, key, entry)
            if found is not None:
                plan, names = found
                try:
                    done = self._replay(plan, [p.base for p in read_pats], [p.base for p in write_pats])
                except ValueError:
                    if names is None:
                        raise
                    # A unit's error in another program's plan names that program's units: run this one.
                    done = None
                if done is not None:
                    if names is None:
                        return done
                    return done[0], {names[n]: v for n, v in done[1].items()}
            cycles, outputs, plan = self._execute(reads, writes, held)
            if plan is not None:
                if len(plans) >= 1024:
                    plans.clear()
                if len(_PLANS) >= 4096:
                    _PLANS.clear()
                plans[key] = plan, None
                _PLANS[(self.mem_params, id(prog), key)] = plan
                shape = _fingerprint(prog)
                if shape is not None:
                    _PLANS.setdefault((self.mem_params, shape, key), plan)
                if entry is not None:
                    if len(_UNSTORED) >= 1024:
                        _UNSTORED.clear()
                    _UNSTORED[id(plan)] = plan, entry
            return cycles, outputs
        return self._execute(reads, writes, held)[:2]

    def _entry_name(self, prog, key, held):
        """The launch-plan cache's name for the plan of a launch of ``prog`` with shapes ``key``
        (:mod:`sw.model.plan_cache`), or None where no entry is kept: the cache is off, the launch has reads
        already held (a looped kernel's later iteration), the program has no fingerprint or the compiled kernels do
        not run it. A gated launch's entry exists only where its plan was made, so its gates passed their checks
        (:meth:`_gates`, :meth:`_check_gates`) once; it is replayed without them, as a plan made in the process is."""
        if held or plan_cache.folder() is None:
            return None
        shape = _fingerprint(prog)
        kernels = pcu_model.compiled_kernels()
        if shape is None or not kernels or getattr(kernels, "seq_build", None) is None:
            return None
        tiers = tuple((tier, views[1] is not None, None if views[0] is None else len(views[0]))
                      for tier, views in ((t, self._tier_views(t)) for t in TIER_NAMES))
        library = os.path.basename(getattr(kernels, "__file__", "") or "")
        return plan_cache.entry_name((library, self.mem_params, self.array_params, self.agcus, shape, key, tiers))

    def _stored_plan(self, prog, key, entry):
        """``(plan, None)`` of a launch of ``prog`` with shapes ``key`` from the launch-plan cache's entry ``entry``,
        kept as a plan made here would be; None where there is none. The plan is ``(prog, (), (), None, the
        sequence, counts, cycles, ())``: :meth:`_flat` replays it (:meth:`_stored_flat`), and where that cannot
        run the launch, :meth:`_execute` does."""
        found = None if entry is None else plan_cache.load(entry)
        if found is None:
            return None
        meta, arrays = found
        try:
            outputs = list(prog.host_outputs)
            slots = tuple((kind, arrays[what["array"]] if isinstance(what, dict) else int(what))
                          for kind, what in meta["slots"])
            wb = self.mem_params.word_bytes
            for kind, what in slots:
                if kind == "tier" and what not in TIER_NAMES or kind == "buffer" and not 0 <= what < 1 << 32 or \
                        kind == "half" and not (0 <= what < 1 << 36 and what % wb == 0) or \
                        kind == "array" and what.dtype != np.int64 or kind not in ("tier", "buffer", "half", "array"):
                    raise ValueError(f"a {kind} slot of {what!r}")
            stored = {"slots": slots, "ops": arrays[meta["ops"]], "checks": arrays[meta["checks"]],
                      "reads": int(meta["reads"]), "writes": int(meta["writes"]),
                      "outputs": tuple((outputs[place], int(at), None if shape is None else tuple(shape),
                                        arrays[last]) for place, at, shape, last in meta["outputs"])}
            if (stored["reads"], stored["writes"]) != (len(prog.host_inputs), len(prog.host_outputs)) or \
                    sorted(name for name, *_ in stored["outputs"]) != sorted(outputs):
                raise ValueError("its ports are not the program's")
            for name, at, shape, last in stored["outputs"]:
                # An output is a buffer its shape fits (one dimension may be -1) with bool last flags.
                kind, size = slots[at] if 0 <= at < len(slots) else (None, 0)
                known = math.prod(k for k in shape or () if k != -1)
                if kind != "buffer" or last.dtype != bool or shape is not None and (
                        shape.count(-1) > 1 or any(k < -1 for k in shape) or
                        (size % known if -1 in shape and known else size != known)):
                    raise ValueError(f"output {name!r} is not a buffer of its shape")
            counts = tuple(((str(tier), str(what)), int(words)) for tier, what, words in meta["counts"])
            cycles = int(meta["cycles"])
            if not all(tier in self.stats and what in ("reads", "writes") and words >= 0
                       for (tier, what), words in counts) or cycles < 0:
                raise ValueError("a counter the chip does not have, or a negative count")
            plan = prog, (), (), None, stored, counts, cycles, ()
        except Exception as error:  # noqa: BLE001 - whatever an entry that does not fit raises, the plan is made
            print(f"openrdu: the launch-plan cache entry {entry}.plan does not fit its launch ({type(error).__name__}: "
                  f"{error}); removed, making the plan again", file=sys.stderr)
            plan_cache.discard(entry)
            return None
        if len(_PLANS) >= 4096:
            _PLANS.clear()
        _PLANS[(self.mem_params, id(prog), key)] = plan
        _PLANS.setdefault((self.mem_params, _fingerprint(prog), key), plan)
        return plan, None

    def _store_plan(self, plan, entry, ops):
        """Write ``plan``'s flat sequence ``ops`` (:meth:`_sequence_ops`) to the launch-plan cache as ``entry``."""
        slots, words, checks, outputs = ops
        arrays, table = [words, checks], []
        for kind, what in slots:
            if kind == "array":
                arrays.append(what)
                what = {"array": len(arrays) - 1}
            table.append((kind, what if isinstance(what, dict) else int(what)))
        places = {name: k for k, name in enumerate(plan[0].host_outputs)}
        listed = []
        for name, at, shape, last in outputs:
            arrays.append(np.asarray(last, bool))
            listed.append((places[name], int(at), None if shape is None else [int(k) for k in shape],
                           len(arrays) - 1))
        meta = {"slots": table, "ops": 0, "checks": 1, "reads": len(plan[1]), "writes": len(plan[2]),
                "outputs": listed, "cycles": int(plan[6]),
                "counts": [(tier, what, int(words)) for (tier, what), words in plan[5]]}
        plan_cache.store(entry, meta, arrays)

    def _known_plan(self, prog, key):
        """``(plan, names)`` of a launch of ``prog`` with shapes ``key`` made before: by ``prog`` itself (``names``
        None), or by a program that differs from it only in its names (``names``: that program's host output
        names -> ``prog``'s, for the outputs); None where there is none."""
        plan = _PLANS.get((self.mem_params, id(prog), key))
        if plan is not None and plan[0] is prog:
            return plan, None
        shape = _fingerprint(prog)
        plan = None if shape is None else _PLANS.get((self.mem_params, shape, key))
        if plan is None:
            return None
        if plan[0] is prog:
            return plan, None
        return plan, dict(zip(plan[0].host_outputs, prog.host_outputs))

    def _execute(self, reads, writes, held=None):
        """:meth:`execute` step by step; returns ``(cycles, outputs, plan)``, the plan None where none can be made
        (a word outside its tier, a tier not kept in one array)."""
        prog, P, lanes = self.program, self.mem_params, self.array_params.lanes
        wb = P.word_bytes
        array = _array_model(prog)
        inputs, words_of, reports = {}, {}, {}

        def read(name, k, pat):
            tier = P.tiers[pat.tier]
            vectors, last, report = memory_units.transfer_read(self.memory[pat.tier], tier.capacity, pat.base,
                                                               pat.nest, lanes=lanes, word_bytes=wb, bf16=pat.bf16)
            reports[(k, "read")] = (report, pat)
            inputs[name] = (vectors, last)

        def write(name, k, pat, data):
            tier = P.tiers[pat.tier]
            reports[(k, "write")] = (memory_units.transfer_write(self.memory[pat.tier], tier.capacity, pat.base,
                                                                 pat.nest, data, word_bytes=wb), pat)

        gated = self._gates(prog, reads, writes)
        buffered = {}
        for name, port in prog.host_inputs.items():
            k, pat = self._pattern(reads, "input", name, port)
            read(name, k, pat)
            if name not in gated:
                words_of[name] = (pat.tier, pat.words)
                if held and held.get(k):
                    buffered[name] = min(int(held[k]), pat.words, P.agcu_outstanding)
        shape = (tuple(sorted(words_of.items())), tuple(sorted(buffered.items())))
        arrivals = self._known.get(shape)
        if arrivals is None:
            key = (P, shape)
            if key not in _ARRIVALS:
                _ARRIVALS[key] = self._arrivals(words_of, buffered)
            arrivals = self._known[shape] = _ARRIVALS[key]
        arrivals = dict(arrivals)
        if gated:
            # First run: the gated reads' data is stale and their timing a guess, but the writes they wait
            # for do not depend on them; store those writes, read the gated inputs again, time them after.
            arrivals.update(self._gated_arrivals(gated, {}))
            first = array.run_planned(inputs, arrivals=self._per_vector(arrivals, inputs))[0]
            outs = {out for _, _, out, _ in gated.values()}
            for out in sorted(outs):
                k, pat = self._pattern(writes, "output", out, prog.host_outputs[out])
                write(out, k, pat, first.outputs[out][0])
            for name, (k, pat, *_) in gated.items():
                read(name, k, pat)
            arrivals.update(self._gated_arrivals(gated, first.output_end))
        arrivals = self._per_vector(arrivals, inputs)
        run, array_plan = array.run_planned(inputs, arrivals=arrivals)
        if gated:
            self._check_gates(gated, first, run)
        array_plan = self._credited(array, array_plan, inputs, words_of, arrivals, gated, buffered)
        if self.activity is not None:
            self._tier_words = dict(self._credit_words)
            for tier in TIER_NAMES:
                counts = [w - buffered.get(n, 0) for n, (t, w) in words_of.items() if t == tier]
                counts = [c for c in counts if c > 0]
                if counts and tier not in self._tier_words:
                    self._tier_words[tier] = _service_array(P.tiers[tier], wb, len(counts), sum(counts)).copy()
        timing = array_plan[4]
        arrivals = {name: timing[4][(name, port.port)] for name, port in prog.host_inputs.items()}
        run.cycles, run.unit_cycles, run.unit_end, run.output_end = \
            timing[0], dict(timing[1]), dict(timing[2]), dict(timing[3])
        end = max((e for _, e in arrivals.values()), default=0)
        for name, port in prog.host_outputs.items():
            k, pat = self._pattern(writes, "output", name, port)
            write(name, k, pat, run.outputs[name][0])
            end = max(end, run.output_end[name] + AGCU_WRITE_CYCLES + P.tiers[pat.tier].latency)
        for (k, direction), (report, pat) in sorted(reports.items()):
            self.count(pat.tier, "reads" if direction == "read" else "writes", report.words)
            self.count(pat.tier, "errors", report.addresses.size - report.words)
        for (k, direction), (report, pat) in sorted(reports.items()):
            if report.error:
                side, col = self.agcus[k]
                raise MemoryRangeError(f"AGCU {k} ({side}{col}) {direction}: word {report.error_word} of its "
                                       f"pattern at {pat.base:#x} lies outside {TIER_NAMES[pat.tier]}")
        self._timed = array, array_plan
        return end + 1, run.outputs, self._plan(prog, array, array_plan, reads, writes, end + 1, gated)

    def _kernel_activity(self, prog, reads, writes, cycles):
        """What the kernel just run did, by the model's timing: its units' active spans (busy: their own
        cycles; stalled: the rest of the span) and its AGCU streams' first and last words at the tier."""
        array, plan = self._timed
        P = self.mem_params
        _, _, _, output_end, streams = plan[4]
        units = []
        for name, (start, end, busy) in array.activity(plan).items():
            unit = prog.units[name]
            span = end - start + 1
            # A PMU's busy may exceed its span (an upper bound: ArrayModel.activity); a PCU's may not.
            units.append({"name": name, "kind": unit.kind, "pos": tuple(unit.pos), "start": start, "end": end + 1,
                          "busy": busy, "stall": max(span - busy, 0)})
        out = []
        # Reads served word by word have their words' response cycles (``served``); the others (gated reads,
        # writes) are taken to move evenly over their span.
        gated = self._gates(prog, reads, writes)
        for name, port in prog.host_inputs.items():
            k = self.agcu_at(port.side, port.col)
            first, end = streams[(name, port.port)]
            out.append({"agcu": k, "direction": "read", "tier": TIER_NAMES[reads[k].tier], "words": reads[k].words,
                        "start": max(first - AGCU_READ_CYCLES, 0), "end": max(end - AGCU_READ_CYCLES, 0) + 1,
                        "served": name not in gated})
        sources = {name: (source, delay) for name, source, delay in plan[3][1]}
        for name, port in prog.host_outputs.items():
            k = self.agcu_at(port.side, port.col)
            source, delay = sources[name]
            out.append({"agcu": k, "direction": "write", "tier": TIER_NAMES[writes[k].tier],
                        "words": writes[k].words, "start": streams[source][0] + delay,
                        "end": output_end[name] + AGCU_WRITE_CYCLES + P.tiers[writes[k].tier].latency + 1,
                        "served": False})
        return {"cycles": cycles, "units": units, "streams": out,
                "words": {TIER_NAMES[t]: times for t, times in self._tier_words.items()}}

    @staticmethod
    def _per_vector(arrivals, inputs):
        """``arrivals`` with each end no sooner than one vector a cycle allows (a bf16 word makes two)."""
        return {n: (first, max(end, first + len(inputs[n][0]) - 1)) for n, (first, end) in arrivals.items()}

    def _credited(self, array, plan, inputs, words_of, arrivals, gated, buffered=None):
        """``plan`` retimed for the AGCUs' read credits: a read stream holds at most ``agcu_outstanding`` words
        between its request and the fabric taking them, and the fabric takes them only as fast as its sinks (and
        the FIFOs on the way) let it, so a stream whose consumer starts late stops and leaves its tier to the
        others. A fixed point of the array's timing and the tiers' service; ``plan`` itself where no stream
        runs into its credits. ``arrivals``: each input's (first, end) in ``plan``; ``buffered``: input name ->
        words in its AGCU's buffer at the start (:meth:`execute`'s ``held``), whose tier is always served with
        credits.
        """
        buffered = buffered or {}
        P, A = self.mem_params, self.array_params
        # Per credited tier, its words' response cycles in the latest service (for activity records).
        self._credit_words = {}
        tiers = {}
        for name, (tier, words) in words_of.items():
            tiers.setdefault(tier, []).append(name)
        # Tiers served with credits, and per tier the sinks' readiness its last service had and what it gave.
        credited, seen, last = set(), set(), {}
        for _ in range(_CREDIT_ROUNDS):
            ready = {}
            for name, sinks in array.consumers(plan).items():
                if name not in words_of:
                    continue
                vectors = len(inputs[name][0])
                at = np.full(vectors, _NEVER, np.int64)
                for delay, words, t0, t1 in sinks:
                    if t0 is None:
                        continue
                    # Vector k enters the fabric once the sink takes vector k - slack (from vector slack on; none
                    # waits before): the FIFOs hold the rest.
                    slack = A.switch_fifo_depth * delay + A.unit_fifo_depth
                    if slack < vectors:
                        take = np.arange(vectors - slack, dtype=np.int64)
                        take *= t1 - t0
                        take //= max(words - 1, 1)
                        take += t0 - delay + 1
                        np.maximum(at[slack:], take, out=at[slack:])
                ready[name] = at
            served = dict(arrivals)
            for tier, names in tiers.items():
                if tier not in credited and not any(n in buffered for n in names) and \
                        not any(self._runs_into_credits(tier, names, words_of, ready, inputs)):
                    continue
                credited.add(tier)
                held = b"".join(ready[n].tobytes() for n in names)
                if held != last.get(tier, (None,))[0]:
                    streams = [(words_of[n][1], len(inputs[n][0]), ready[n], buffered.get(n, 0)) for n in names]
                    # The service is a function of these streams alone: launches of other programs with the same
                    # streams (a model's layers) share it.
                    key = (P.tiers[tier], P.word_bytes, P.agcu_outstanding,
                           tuple((words, vectors, early) for words, vectors, _, early in streams), held)
                    resp = _CREDITS.get(key)
                    if resp is None:
                        resp = _credit_responses(P.tiers[tier], P.word_bytes, streams, P.agcu_outstanding)
                        if len(_CREDITS) >= 64:
                            _CREDITS.clear()
                        _CREDITS[key] = resp
                    last[tier] = held, {n: (int(r[0]) + AGCU_READ_CYCLES, int(r[-1]) + AGCU_READ_CYCLES)
                                        for n, r in zip(names, resp)}
                    if self.activity is not None:
                        # Words already buffered at the start were served before it (sw.model.loop).
                        self._credit_words[tier] = np.concatenate([np.asarray(r[buffered.get(n, 0):], np.int64)
                                                                   for n, r in zip(names, resp)])
                served.update(last[tier][1])
            served = self._per_vector(served, inputs)
            if gated:
                # The writes gated reads wait for do not need them (_check_gates): time those writes first.
                ends = array.timing(plan[3], served)[3]
                served.update(self._per_vector(self._gated_arrivals(gated, ends), inputs))
            if served == arrivals:
                return plan
            arrivals = served
            key = tuple(sorted(arrivals.items()))
            plan = array.retimed(plan, arrivals)
            if key in seen:
                return plan
            seen.add(key)
        return plan

    def _runs_into_credits(self, tier, names, words_of, ready, inputs):
        """Per stream of ``names`` on ``tier``, served round-robin without credits: whether it would ask for a
        word before the fabric has taken the one ``agcu_outstanding`` earlier (``ready`` as in :meth:`_credited`)."""
        P = self.mem_params
        counts = tuple(words_of[n][1] for n in names)
        key = (P.tiers[tier], P.word_bytes, P.agcu_outstanding, counts, tuple(len(inputs[n][0]) for n in names))
        checks = _CREDIT_CHECKS.get(key)
        if checks is None:
            if len(_CREDIT_CHECKS) >= 256:
                _CREDIT_CHECKS.clear()
            checks = _CREDIT_CHECKS[key] = _credit_checks(*key)
        for i, n in enumerate(names):
            check = checks(i)
            if check is None:
                yield False
                continue
            # Vector k leaves at popped[k]; a credit comes back a cycle after the vector that frees it.
            taken, k, frees, limit = check
            x = np.maximum(taken, ready[n])
            popped = np.maximum.accumulate(x - k) + k
            yield bool(np.any(popped[frees] + 1 > limit))

    def _gates(self, prog, reads, writes):
        """Host input name -> (AGCU, pattern, host output it waits for, that write's tier latency) of each read
        whose pattern has ``after``.

        Raises LaunchError when the write it names is not one of this launch's host outputs.
        """
        outputs = {self.agcu_at(port.side, port.col): name for name, port in prog.host_outputs.items()}
        gated = {}
        for name, port in prog.host_inputs.items():
            k = self.agcu_at(port.side, port.col)
            pat = reads.get(k)
            if pat is None or pat.after is None:
                continue
            if pat.after not in outputs or pat.after not in writes:
                side, col = self.agcus[k]
                raise LaunchError(f"AGCU {k} ({side}{col}) read waits for AGCU {pat.after}'s write, which this "
                                  f"kernel does not run: the read would never start")
            if pat.lag or writes[pat.after].iterations > 1:
                raise LaunchError(f"AGCU {k} read gated per iteration (lag {pat.lag}, on AGCU {pat.after}'s write "
                                  f"of {writes[pat.after].iterations} top-level iterations): the fast model gates "
                                  f"on a whole write only")
            gated[name] = (k, pat, outputs[pat.after], self.mem_params.tiers[writes[pat.after].tier].latency)
        return gated

    def _gated_arrivals(self, gated, output_end):
        """Arrivals of the gated inputs: each write's gated reads on one tier round-robin from the cycle after it
        is done (``output_end``: host output -> its last word's cycle; missing ones count as at once)."""
        groups = {}
        for name, (k, pat, out, latency) in gated.items():
            done = output_end[out] + AGCU_WRITE_CYCLES + latency + AGCU_GATE_CYCLES if out in output_end else 0
            groups.setdefault(done, {})[name] = (pat.tier, pat.words)
        arrivals = {}
        for done, words_of in groups.items():
            for name, (first, last) in self._arrivals(words_of).items():
                arrivals[name] = (first + done, last + done)
        return arrivals

    def _check_gates(self, gated, first, run):
        """Refuse a launch whose gating write needs the read that waits for it (its data or timing moved)."""
        for name, (k, pat, out, _) in gated.items():
            if first.output_end[out] != run.output_end[out] or \
                    not np.array_equal(first.outputs[out][0], run.outputs[out][0]):
                side, col = self.agcus[k]
                raise LaunchError(f"AGCU {k} ({side}{col}) read waits for AGCU {pat.after}'s write, which needs "
                                  f"that read's data: the kernel would never finish")

    def _plan(self, prog, array, array_plan, reads, writes, cycles, gated):
        """What a launch like this one (same program, tiers, loop nests and gates; any bases) repeats, or None.

        Only launches whose every word lies in its tier, with tiers kept in one array and writes to distinct
        words, have a plan: replaying it is then one slice or gather per read and one store per write.
        """
        P = self.mem_params
        sides = []
        for ports, patterns in ((prog.host_inputs, reads), (prog.host_outputs, writes)):
            side = []
            for name, port in ports.items():
                pat = patterns[self.agcu_at(port.side, port.col)]
                least, greatest, offsets, n, distinct = memory_units.nest_rows(pat.nest)
                if self._tier_rows(pat.tier) is None or not n or (patterns is writes and not distinct):
                    return None
                side.append((name, pat.tier, offsets, n, least, greatest, getattr(pat, "bf16", False)))
            sides.append(side)
        counts = {}
        for (direction, side) in (("reads", sides[0]), ("writes", sides[1])):
            for _, tier, _, n, *_ in side:
                counts[(TIER_NAMES[tier], direction)] = counts.get((TIER_NAMES[tier], direction), 0) + n
        inputs, outputs = list(prog.host_inputs), list(prog.host_outputs)
        gates = tuple((inputs.index(name), outputs.index(out)) for name, (_, _, out, _) in gated.items())
        return prog, sides[0], sides[1], array, array_plan, tuple(counts.items()), cycles, gates

    def _tier_rows(self, tier):
        """Tier ``tier`` as (capacity / word_bytes, word_bytes) bytes, or None when it is not kept in one array."""
        return self._tier_views(tier)[0]

    def _tier_views(self, tier):
        """(:meth:`_tier_rows`, the same rows as little-endian 32-bit and 16-bit words or None where a word's bytes
        are not a whole number of them)."""
        def views(memory):
            P = self.mem_params
            rows = memory_units.tier_rows(memory, P.tiers[tier].capacity, P.word_bytes)
            fits = rows is not None and P.word_bytes % 4 == 0
            return rows, rows.view("<u4") if fits else None, rows.view("<u2") if fits else None
        return kept(self._rows, self.memory[tier], views, key=tier)

    def _replay(self, plan, read_bases, write_bases, outputs=True):
        """``(cycles, outputs)`` of :meth:`execute` by ``plan`` with the patterns at ``read_bases`` /
        ``write_bases`` (bytes, in the plan's order); None (nothing done) where a base takes a word out of its tier
        or a tier was replaced, for :meth:`_execute` to run and report. Without ``outputs`` the outputs are only
        stored (``(cycles, None)``).

        Runs the plan's flat sequence (:meth:`_flat`, made once per plan on this chip) where it has one and it
        takes the launch, else the plan's steps."""
        flat = kept(self._flats, plan, self._flat)
        if flat is not None:
            done = flat(read_bases, write_bases, outputs)
            if done is not None:
                return done
        _, reads, writes, array, array_plan, counts, cycles, gates = plan
        if array is None:
            # A plan from the launch-plan cache (no array model: _stored_plan) has its flat sequence alone.
            return None
        wb, lanes = self.mem_params.word_bytes, self.array_params.lanes
        starts, tiers = [], {}
        for side, bases in ((reads, read_bases), (writes, write_bases)):
            for (name, tier, offsets, n, least, greatest, bf16), base in zip(side, bases):
                views = tiers.get(tier)
                if views is None:
                    views = tiers[tier] = self._tier_views(tier)
                rows = views[0]
                row, rest = divmod(base, wb)
                if rows is None or rest or row + least < 0 or row + greatest >= len(rows):
                    return None
                starts.append((views, row))
        data = {}
        # With the tier seen as 32-bit words, a read of whole vectors is one copy (bf16: one widening) and a write
        # one store; as_vectors pads a partial final vector.
        quarter = wb // 4

        def read(i):
            name, tier, offsets, n, least, greatest, bf16 = reads[i]
            (rows, rows32, rows16), row = starts[i]
            at = row + offsets
            if rows32 is None or (n * quarter * (2 if bf16 else 1)) % lanes:
                if isinstance(offsets, int):
                    raw = rows[at:at + n]
                    # as_vectors widens bf16 words into a new array; other words need a copy of their own.
                    raw = raw if bf16 else raw.copy()
                else:
                    raw = rows[at]
                data[name] = memory_units.as_vectors(raw, lanes, bf16)
            elif bf16:
                wide = (rows16[at:at + n] if isinstance(offsets, int) else rows16[at]).astype("<u4")
                wide <<= 16
                data[name] = wide.reshape(-1, lanes)
            else:
                data[name] = (rows32[at:at + n].copy() if isinstance(offsets, int) else rows32[at]).reshape(-1, lanes)

        def write(i, output):
            name, tier, offsets, n, *_ = writes[i]
            (rows, rows32, _), row = starts[len(reads) + i]
            at = row + offsets
            if rows32 is None:
                flat = np.ascontiguousarray(np.asarray(output, dtype="<u4")).view(np.uint8).reshape(-1)
                words = flat[:n * wb].reshape(n, wb)
                target = rows
            else:
                words = np.asarray(output, dtype="<u4").reshape(-1)[:n * quarter].reshape(n, quarter)
                target = rows32
            if isinstance(offsets, int):
                target[at:at + n] = words
            else:
                target[at] = words

        for i in range(len(reads)):
            read(i)
        after = None
        if gates:
            # As _execute: the writes gated reads wait for first, then those reads again. Only the units
            # those writes need run first; then the units the new data reaches and those not run yet.
            gating = sorted({w for _, w in gates})
            values, done = array.replay_outputs(array_plan, data, [writes[i][0] for i in gating])
            sources = array_plan[2]
            for i in gating:
                write(i, values[sources[writes[i][0]][0]])
            for i, _ in gates:
                read(i)
            after = values, done, {reads[i][0] for i, _ in gates}
        run = array.replay(array_plan, data, after=after)
        self._timed = array, array_plan
        for i in range(len(writes)):
            write(i, run.outputs[writes[i][0]][0])
        for (tier, what), words in counts:
            self.stats[tier][what] += words
        return cycles, run.outputs if outputs else None

    def _flat(self, plan):
        """:meth:`_replay` of ``plan`` on this chip's memory as one flat sequence, or None where a tier it uses is not
        kept in one array.

        Everything that follows from the plan is bound once: each read's and write's bounds, tier view and form
        (a slice, a strided view or a gather of rows, a bf16 widening; for weights that a GEMV widens itself, the
        bf16 words as they lie in the tier), the array's steps with the compiled kernels' arguments
        (:meth:`ArrayModel.compiled_steps`), with gated reads the steps each phase runs (as :meth:`_replay`), the
        outputs' sources and the counters. The function returned takes the read and write patterns' bases (and
        whether to return the outputs, else None) and returns ``(cycles, outputs)``, or None (nothing done) where
        a base takes a word out of its tier, a tier was replaced or the compiled kernels do not run every unit
        (:func:`sw.model.pcu.compiled_kernels`): :meth:`_replay` then runs the launch and says which.
        """
        if plan[3] is None:
            return self._stored_flat(plan)
        _, reads, writes, array, array_plan, counts, cycles, gates = plan
        wb, lanes = self.mem_params.word_bytes, self.array_params.lanes
        quarter = wb // 4
        memory = self.memory
        tiers = {}
        for _, tier, *_ in reads + writes:
            views = self._tier_views(tier)
            if views[0] is None:
                return None
            tiers[tier] = memory[tier], views
        held = tuple((tier, mem) for tier, (mem, _) in tiers.items())

        ports = dict(array_plan[0])
        # Weights a GEMV widens itself: their reads give the bf16 values as they lie in the tier (a view of it, so
        # not where a gated launch writes before its last units run).
        wanted, halves = frozenset() if gates else array.half_weights(array_plan), set()

        def widen(halves):
            # bf16 values as the AGCU's bf16 read gives them: each the top half of a 32-bit word.
            wide = halves.astype("<u4")
            wide <<= 16
            return wide.reshape(-1, lanes)

        def reader(name, tier, offsets, n, least, greatest, bf16):
            # _replay's read(), each form chosen once.
            rows, rows32, rows16 = tiers[tier][1]
            if bf16 and rows32 is not None and isinstance(offsets, int) and not (n * quarter * 2) % lanes and \
                    (name, ports[name]) in wanted:
                halves.add((name, ports[name]))
                return lambda row: rows16[row + offsets:row + offsets + n]
            if rows32 is None or (n * quarter * (2 if bf16 else 1)) % lanes:
                if isinstance(offsets, int):
                    return lambda row: memory_units.as_vectors(
                        rows[row + offsets:row + offsets + n] if bf16 else rows[row + offsets:row + offsets + n].copy(),
                        lanes, bf16)
                return lambda row: memory_units.as_vectors(rows[row + offsets], lanes, bf16)
            if isinstance(offsets, int):
                if bf16:
                    return lambda row: widen(rows16[row + offsets:row + offsets + n])
                return lambda row: rows32[row + offsets:row + offsets + n].copy().reshape(-1, lanes)
            grid = _grid(offsets)
            item, width = ("<u2", 2 * quarter) if bf16 else ("<u4", quarter)
            if grid is not None:
                # The words as a strided view of the tier (rows of ``wb`` bytes), copied in the nest's order.
                first, shape, strides = grid
                shape, strides = shape + (width,), tuple(k * wb for k in strides) + (wb // width,)
                if bf16:
                    return lambda row: widen(np.ndarray(shape, item, rows, (row + first) * wb, strides))
                return lambda row: np.ndarray(shape, item, rows, (row + first) * wb, strides).copy().reshape(-1, lanes)
            if bf16:
                return lambda row: widen(rows16.take(row + offsets, axis=0))
            return lambda row: rows32.take(row + offsets, axis=0).reshape(-1, lanes)

        def writer(name, tier, offsets, n, *_):
            # _replay's write(), each form chosen once.
            rows, rows32, _ = tiers[tier][1]
            if rows32 is None:
                def words(output):
                    flat = np.ascontiguousarray(np.asarray(output, dtype="<u4")).view(np.uint8).reshape(-1)
                    return flat[:n * wb].reshape(n, wb)
                target, item, width = rows, np.uint8, wb
            else:
                def words(output):
                    return np.asarray(output, dtype="<u4").reshape(-1)[:n * quarter].reshape(n, quarter)
                target, item, width = rows32, "<u4", quarter
            if isinstance(offsets, int):
                def write(row, output):
                    target[row + offsets:row + offsets + n] = words(output)
                return write
            grid = _grid(offsets)
            if grid is not None:
                first, shape, strides = grid
                strides = tuple(k * wb for k in strides) + (wb // width,)

                def write(row, output):
                    np.ndarray(shape + (width,), item, rows, (row + first) * wb, strides)[...] = \
                        words(output).reshape(shape + (width,))
                return write

            def write(row, output):
                target[row + offsets] = words(output)
            return write

        lasts = array_plan[2]
        # Per read: its stream's key, reader and the rows its base may take (least <= row < bound); per write:
        # its writer, bounds and source.
        read_items = tuple(((name, ports[name]), reader(name, tier, *rest), -rest[2], len(tiers[tier][1][0]) - rest[3])
                           for name, tier, *rest in reads)
        write_items = tuple((writer(name, tier, *rest), -rest[2], len(tiers[tier][1][0]) - rest[3], lasts[name][0])
                            for name, tier, *rest in writes)
        outputs = tuple((name, source, last) for name, (source, last) in lasts.items())
        stats = tuple((self.stats[tier], what, words) for (tier, what), words in counts)
        kernels = pcu_model.compiled_kernels
        timed = array, array_plan
        halves = frozenset(halves)
        if gates:
            # As _replay: the units the gating writes need, those writes, the gated reads again, then the units
            # not run yet or whose inputs changed.
            gating = sorted({w for _, w in gates})
            done, first = array.needed_order(array_plan, [writes[i][0] for i in gating])
            again = array.rerun_order(array_plan, done, {reads[i][0] for i, _ in gates})
            order = first, gating, tuple(i for i, _ in gates), again
            gating = tuple(write_items[i][::3] + (i,) for i in gating)
            regated = tuple(read_items[i][:2] + (i,) for i, _ in gates)
        else:
            order = None

        # The array's steps for the kernels last seen (they are the same object while the module is loaded), and
        # the whole sequence in one call where the compiled kernels take it (_sequence).
        cached = [None, None, None]

        def run(read_bases, write_bases, want=True):
            c = kernels()
            if not c:
                return None
            for tier, mem in held:
                if memory[tier] is not mem:
                    return None
            if cached[0] is not c:
                steps = array.compiled_steps(array_plan, c, halves)
                cached[:] = c, steps, self._sequence(plan, c, steps, halves, order)
            steps, sequence = cached[1], cached[2]
            if sequence is not None:
                if not sequence[0](sequence[1], read_bases, write_bases):
                    return None
                self._timed = timed
                for counter, what, words in stats:
                    counter[what] += words
                if not want:
                    return cycles, None
                return cycles, {name: (data.reshape(shape).copy(), last.copy())
                                for name, data, shape, last in sequence[2]}
            write_rows = []
            for (_, least, bound, _), base in zip(write_items, write_bases):
                row, rest = divmod(base, wb)
                if rest or row < least or row >= bound:
                    return None
                write_rows.append(row)
            values, read_rows = {}, []
            for (key, read, least, bound), base in zip(read_items, read_bases):
                row, rest = divmod(base, wb)
                if rest or row < least or row >= bound:
                    return None
                values[key] = read(row)
                read_rows.append(row)
            if gates:
                for i in first:
                    steps[i](values)
                for write, source, i in gating:
                    write(write_rows[i], values[source])
                for key, read, i in regated:
                    values[key] = read(read_rows[i])
                for i in again:
                    steps[i](values)
            else:
                for step in steps:
                    step(values)
            self._timed = timed
            for (write, _, _, source), row in zip(write_items, write_rows):
                write(row, values[source])
            for counter, what, words in stats:
                counter[what] += words
            if not want:
                return cycles, None
            return cycles, {name: (values[source], last.copy()) for name, source, last in outputs}
        return run

    def _stored_flat(self, plan):
        """:meth:`_flat` of a plan from the launch-plan cache (:meth:`_stored_plan`): its sequence run on this chip's
        tiers, with the same checks and results as a made plan's; None where a tier it uses is not kept as 32-bit
        words."""
        stored, counts, cycles = plan[4], plan[5], plan[6]
        memory = self.memory
        views = {tier: self._tier_views(tier) for kind, tier in stored["slots"] if kind == "tier"}
        if any(v[1] is None for v in views.values()):
            return None
        held = tuple((tier, memory[tier]) for tier in views)
        stats = tuple((self.stats[tier], what, words) for (tier, what), words in counts)
        wb = self.mem_params.word_bytes
        cached = [None, None]

        def run(read_bases, write_bases, want=True):
            c = pcu_model.compiled_kernels()
            if not c:
                return None
            for tier, mem in held:
                if memory[tier] is not mem:
                    return None
            if cached[0] is not c:
                build = getattr(c, "seq_build", None)
                if build is None:
                    return None
                try:
                    slots = tuple(views[x][0] if kind == "tier" else np.empty(x, np.uint32) if kind == "buffer" else x
                                  for kind, x in stored["slots"])
                    sequence = build(slots, stored["ops"], stored["checks"], wb, stored["reads"], stored["writes"])
                except Exception:  # noqa: BLE001 - a sequence the kernels refuse runs step by step, as a made one
                    return None
                cached[:] = c, (sequence, tuple((name, slots[k], shape, last)
                                                for name, k, shape, last in stored["outputs"]))
            sequence, outputs = cached[1]
            if not c.seq_run(sequence, read_bases, write_bases):
                return None
            # The last run's array model and plan are for recording (_kernel_activity), which never replays.
            self._timed = None
            for counter, what, words in stats:
                counter[what] += words
            if not want:
                return cycles, None
            return cycles, {name: (data.reshape(shape).copy(), last.copy()) for name, data, shape, last in outputs}
        return run

    def _sequence(self, plan, c, steps, halves, order):
        """The flat sequence of ``plan`` (:meth:`_flat`) as one call of the compiled kernels ``c``
        (``fastfp.seq_run``): ``(seq_run, its sequence, outputs)``, ``outputs`` per host output ``(name, its
        buffer, its shape, last)``; None where a step is not one the call takes (a unit on the numpy forms, a PMU
        map of words that is not a slice or a ``take``), a read or write is not of whole vectors of a tier seen as
        32-bit words, a write's rows repeat, or the kernels have no ``seq_build``.

        The same reads, steps and writes in the same order as :meth:`_flat`'s run, on buffers made once per chip:
        each stream's values get a buffer of their size (known from the plan), a GEMV's bf16 weights (``halves``)
        are read where they lie in the tier. ``order``: with gated reads, ``(steps first, gating writes, gated
        reads, steps again)`` as :meth:`_flat` runs them. What follows from the plan alone (the ops, the buffers'
        sizes) is kept per plan for every chip of the process (:meth:`_sequence_ops`)."""
        build = getattr(c, "seq_build", None)
        if build is None:
            return None
        views = {tier: self._tier_views(tier) for _, tier, *_ in plan[1] + plan[2]}
        shape = tuple((tier, v[1] is not None, len(v[0]) if v[0] is not None else None) for tier, v in views.items())
        key = (id(plan), c, halves, shape)
        ops = kept(_SEQUENCES, plan, lambda plan: self._sequence_ops(plan, steps, halves, order, views), key=key)
        unstored = _UNSTORED.pop(id(plan), None)
        if ops is None:
            return None
        if unstored is not None and unstored[0] is plan:
            self._store_plan(plan, unstored[1], ops)
        slots, words, checks, outputs = ops
        slots = tuple(views[x][0] if kind == "tier" else np.empty(x, np.uint32) if kind == "buffer" else x
                      for kind, x in slots)
        try:
            sequence = build(slots, words, checks, self.mem_params.word_bytes, len(plan[1]), len(plan[2]))
        except (ValueError, BufferError):
            return None
        return c.seq_run, sequence, tuple((name, slots[k], shape, last) for name, k, shape, last in outputs)

    def _sequence_ops(self, plan, steps, halves, order, views):
        """:meth:`_sequence`'s ``(slots, ops, checks, outputs)`` for ``fastfp.seq_build``, the slots as ``(kind,
        what)``: ``("tier", tier)``, ``("buffer", 32-bit words)``, ``("half", bytes)`` or ``("array", a read-only int64
        array)``, the outputs with their slots' indices; None where the call does not take the sequence."""
        _, reads, writes, array, array_plan, _, _, _ = plan
        wb, lanes = self.mem_params.word_bytes, self.array_params.lanes
        quarter = wb // 4
        slots, ops, keys, shapes, tier_slots = [], [], {}, {}, {}
        half_slots = set()
        # Buffers a PMU map's take fills -> (its source's slot, the flat index).
        taken = {}
        ports = dict(array_plan[0])

        def slot(kind, what, shape=None):
            slots.append((kind, what))
            shapes[len(slots) - 1] = shape
            return len(slots) - 1

        def indices(values):
            # A read-only copy: seq_build checks the values once, and refuses index slots that an op could write.
            held = np.array(values, np.int64).reshape(-1)
            held.flags.writeable = False
            return slot("array", held)

        def buffer(items, shape):
            return slot("buffer", items, shape)

        def words(k):
            return slots[k][1]

        def tier_slot(tier):
            if views[tier][1] is None:
                return None
            if tier not in tier_slots:
                tier_slots[tier] = slot("tier", tier)
            return tier_slots[tier]

        def rows_form(offsets, n, write):
            # (first, shape, strides, offsets slot) of the rows a read or write takes, or None.
            if isinstance(offsets, int):
                return offsets, (1, 1, n), (0, 0, 1), -1
            grid = _grid(offsets)
            if grid is not None:
                first, shape, strides = grid
                if int(np.prod(shape)) != n or len(shape) > 3 or \
                        (write and any(k == 0 and b > 1 for b, k in zip(shape, strides))):
                    return None
                pad = 3 - len(shape)
                return first, (1,) * pad + tuple(shape), (0,) * pad + tuple(strides), -1
            rows = np.asarray(offsets).reshape(-1)
            if len(rows) != n or (write and len(np.unique(rows)) != n):
                return None
            return 0, (1, 1, 1), (0, 0, 0), indices(rows)

        def source(key, half=False):
            k = keys.get(key)
            if k is None or (k in half_slots) != half:
                raise LookupError(key)
            return k

        def read(i):
            name, tier, offsets, n, least, greatest, bf16 = reads[i]
            key = (name, ports[name])
            at = tier_slot(tier)
            if at is None:
                raise LookupError(name)
            if key in halves:
                keys[key] = k = slot("half", n * wb)
                half_slots.add(k)
                ops.append((2, k, at, i, offsets))
                return
            form = rows_form(offsets, n, False)
            if form is None or (n * quarter * (2 if bf16 else 1)) % lanes:
                raise LookupError(name)
            first, shape, strides, offset_slot = form
            keys[key] = k = buffer(n * quarter * (2 if bf16 else 1), (-1, lanes))
            ops.append((1, k, at, i, int(bf16), first) + shape + strides + (offset_slot, n))

        def write(i):
            name, tier, offsets, n = writes[i][:4]
            at = tier_slot(tier)
            form = None if at is None else rows_form(offsets, n, True)
            k = source(array_plan[2][name][0])
            if form is None or words(k) < n * quarter:
                raise LookupError(name)
            first, shape, strides, offset_slot = form
            ops.append((3, k, at, len(reads) + i, 0, first) + shape + strides + (offset_slot, n))

        def activations(a, groups, m, rows, stride, step):
            # A GEMV reads word g stride + j step + r of its activations (g < groups, j < m, r < rows). Where they
            # are a PMU map's take (an activation broadcast to every lane: each word read lanes times), the words
            # it reads are taken instead, in that order (stride m rows, step rows), or read where they lie when
            # those are the take's source from its start in a grid: ``(slot, stride, step)``. The take itself is
            # left out below when nothing else reads it.
            if a not in taken:
                return a, stride, step
            src, index = taken[a]

            def lattice(count, outer, inner):
                # Word g outer + j inner + r for g < count, j < m, r < rows, in that order.
                return (np.arange(count, dtype=np.int64)[:, None, None] * outer
                        + np.arange(m, dtype=np.int64)[None, :, None] * inner
                        + np.arange(rows, dtype=np.int64)[None, None, :])

            at = lattice(1 if stride == 0 else groups, stride, step)
            if at.size == 0 or int(at.max()) >= index.size:
                return a, stride, step
            used = index[at]
            outer = 0 if stride == 0 or groups == 1 else int(used[1, 0, 0] - used[0, 0, 0])
            inner = rows if m == 1 else int(used[0, 1, 0] - used[0, 0, 0])
            grid = lattice(used.shape[0], outer, inner)
            if int(used[0, 0, 0]) == 0 and outer >= 0 and inner >= 0 and np.array_equal(used, grid):
                return src, outer, inner
            compact = buffer(used.size, None)
            ops.append((5, compact, src, indices(used), used.size))
            return compact, 0 if stride == 0 else m * rows, rows

        def step(i):
            sequence, unit = getattr(steps[i], "sequence", None), getattr(array_plan[1][i], "unit", None)
            if sequence is None:
                if unit is None or len(unit) != 4 or unit[0] != "gather":
                    raise LookupError(i)
                _, key, data, form = unit
                k = source(data)
                if isinstance(form, slice):
                    start, stop, stride = form.indices(words(k))
                    count = len(range(start, stop, stride))
                    if stride < 1 or count % lanes:
                        raise LookupError(i)
                    keys[key] = out = buffer(count, (-1, lanes))
                    ops.append((4, out, k, start, stride, count))
                elif isinstance(form, tuple) and form[0] == "take":
                    index = np.asarray(form[1])
                    keys[key] = out = buffer(index.size, index.shape)
                    taken[out] = k, index.reshape(-1)
                    ops.append((5, out, k, indices(index),
                                index.size))
                else:
                    raise LookupError(i)
                return
            gemv, (compiled, (starts, sizes, groups_out, rows_n), out_reg, inputs, scalars, vo_key, so_key) = sequence
            code, stages, tail_code, so_mode, reduce, scale, bias, post = compiled
            drained = None
            if gemv is not None:
                k0, k1, groups, m, rows, gemv_lanes, stride, half = gemv
                drained = buffer(rows_n * lanes, None)
                a, a_stride, a_step = activations(source(k0), groups, m, rows, stride, gemv_lanes)
                ops.append((6, a, source(k1, bool(half)), drained, groups, m, rows, gemv_lanes, a_stride, a_step,
                            int(half)))
            ins = [-1 if k is None else drained if k == "drained" else source(k) for k in inputs]
            for scalar in scalars:
                if scalar is None:
                    ins.append(-1)
                elif scalar[1] is None:
                    ins.append(source(scalar[0]))
                else:
                    k = source(scalar[0])
                    if len(shapes[k] or ()) != 1:
                        raise LookupError(i)
                    ins.append(buffer(len(scalar[1]), None))
                    ops.append((5, ins[-1], k, indices(scalar[1]), len(scalar[1])))
            so_n = 0 if so_mode == 0 else rows_n if so_mode == 1 else groups_out
            vo, so = buffer(rows_n * lanes, (rows_n, lanes)), buffer(so_n, (so_n,))
            grouped = (indices(starts), indices(sizes)) if so_mode == 2 else (-1, -1)
            ops.append((7, indices(code), stages, rows_n, lanes, *ins, out_reg,
                        tail_code, vo, so_mode, reduce, *grouped, groups_out, scale, bias, post, so))
            if vo_key:
                keys[vo_key] = vo
            if so_key:
                keys[so_key] = so

        try:
            for i in range(len(reads)):
                read(i)
            if order is None:
                for i in range(len(steps)):
                    step(i)
            else:
                first, gating, regated, again = order
                for i in first:
                    step(i)
                for i in gating:
                    write(i)
                for i in regated:
                    read(i)
                for i in again:
                    step(i)
            for i in range(len(writes)):
                write(i)
            outputs = tuple((name, source(key), shapes[source(key)], last)
                            for name, (key, last) in array_plan[2].items())
        except LookupError:
            return None
        # Takes whose buffer no op and no output reads (a GEMV now reads the words it uses elsewhere) are left out.
        read = {k for _, k, _, _ in outputs}
        for op in ops:
            read.update(_op_reads(op))
        ops = [op for op in ops if op[0] != 5 or op[1] in read]
        checks = np.array([(-least, len(views[tier][0]) - greatest)
                           for _, tier, _, _, least, greatest, *_ in reads + writes], np.int64).reshape(-1, 2)
        return tuple(slots), np.array([w for op in ops for w in op], np.int64), checks, outputs

    def _pattern(self, patterns, what, name, port):
        """(AGCU index, its pattern) of host port ``name``; LaunchError when the launch gave it none."""
        k = self.agcu_at(port.side, port.col)
        if k not in patterns:
            direction = "read" if what == "input" else "write"
            raise LaunchError(f"host {what} {name!r} at {port.side}{port.col} (AGCU {k}) has no {direction} pattern")
        return k, patterns[k]

    def _arrivals(self, words_of, buffered=None):
        """(first, end) fabric arrival cycles of each input, streams on one tier served round-robin; ``buffered``
        (name -> words): words a stream has in its AGCU's buffer at the start, there at once."""
        buffered = buffered or {}
        arrivals = {}
        at_once = 0
        for tier_index in TIER_NAMES:
            names = [n for n, (t, w) in words_of.items() if t == tier_index and w > buffered.get(n, 0)]
            for n, (t, w) in words_of.items():
                if t == tier_index and n not in names:
                    arrivals[n] = (at_once, at_once)
            if not names:
                continue
            counts = [words_of[n][1] - buffered.get(n, 0) for n in names]
            times = _service(self.mem_params.tiers[tier_index], self.mem_params.word_bytes, len(names), sum(counts))
            for k, n in enumerate(names):
                # Round r serves, in name order, every stream with more than r words: a stream's first word
                # is its rank in round 0, its last the words of all earlier rounds plus its rank in round c - 1.
                c = counts[k]
                last = sum(min(m, c - 1) for m in counts) + sum(1 for m in counts[:k] if m >= c)
                first = at_once if buffered.get(n) else times[k] + AGCU_READ_CYCLES
                arrivals[n] = (first, times[last] + AGCU_READ_CYCLES)
        return arrivals
