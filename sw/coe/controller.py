"""The CoE controller: route a batch on the chip, schedule (prompt, expert) pairs, switch experts, decode.

One coroutine, :func:`serve`, over the one device interface (:class:`sw.runtime.device.Device`), so
it runs on the fast model and on the co-simulated chip alike. Per batch of ``batch`` requests:

1. **route**: each request without an ``expert`` runs through the router (resident in HBM) on the
   chip; its class is the argmax of ``logits[:K]`` at the prompt's last position. As soon as one
   request is routed its expert may start copying (step 4), beside the routing of the rest of the
   batch, so even a batch's first switch can hide;
2. **schedule**: pairs whose expert is resident (or coming for a pair already queued) run first, then
   the others grouped by expert, in arrival order otherwise; each result stays with its request;
3. **switch**: an expert not resident is placed in a slot and moved in by ``mode``: ``"ddr"`` a
   copy-engine DDR -> HBM transfer (the chip's way), ``"host"`` a write over the host link at
   ``target.memory.host_bytes_per_cycle`` (the GPU way), ``"hbm"`` never (every expert resident in its
   own slot, when they fit). The slot: a free one, else the cache policy's pick among slots whose
   experts no scheduled pair (nor a batch being routed) needs, else the slot of the expert whose next
   pair comes last; never one of the window's (below);
4. **prefetch** (``"ddr"``, ``lookahead`` pairs deep): the queue of scheduled pairs runs on across
   batches (the next batch joins it as soon as the window reaches past the current one when its experts
   are named, and when the queue runs out when it must be routed: routing it earlier would stall the
   pairs still queued, and its experts start copying beside its own routing). Whenever the
   copy engine is idle (before a pair decodes, after a request is routed, and between the steps of a
   decode or a routing once the controller reckons the copy in flight is done), the first expert absent
   among the window starts copying (``Device.start_copy``): the ``lookahead`` pairs after the one
   decoding (between pairs: the next pair and the ``lookahead`` after it), continued by the experts of
   a batch being routed; its slot is one whose expert no pair in the window needs, so a copy may run on
   beside several requests. ``Device.wait_copy`` collects it when its pair is about to run or the
   engine is needed for a demand copy; only the wait it reports delays the chip. The rest of the copy
   was hidden behind the chip's own work (kernels, Program Loads, the sequencer's; the host's assumed
   round trips are not counted as cover). On the RTL both run at once and the wait is measured; the
   fast model runs the copy on its chip clock beside its kernels (without the HBM bandwidth the copy's
   writes take from them);
5. **decode** greedily from the expert's slot: the runtime's steps (:class:`sw.runtime.decode.Session`),
   issued by the host or walked by the chip's sequencer (``orchestration``; each slot then has its own
   launch lists, :mod:`sw.coe.slots`).

Cycles are the device's (measured on the RTL, estimated by the fast model) except the host link's
(``bytes / host_bytes_per_cycle`` plus latency, as the runtime accounts every host transfer).
"""

import hashlib
import time

import numpy as np

from hw.mem.params import DDR, HBM
from sw.coe.cache import SlotCache
from sw.coe.slots import plan as make_plan, slot_model
from sw.errors import CoEError, OpenRDUError
from sw.model.memory_units import host_cycles
from sw.runtime.decode import Session, check_request

MODES = ("ddr", "host", "hbm")


def check_requests(library, requests):
    """Check every request before anything is loaded; CoEError naming the first bad one (1-based)."""
    if not requests:
        raise CoEError("no requests")
    for i, r in enumerate(requests, 1):
        try:
            if r.get("expert") is not None:
                library.check(r["expert"])
            check_request(library.arch, r["prompt_ids"], r["max_new_tokens"])
            if r.get("expert") is None:
                check_request(library.router, r["prompt_ids"], 1)
        except OpenRDUError as error:
            raise CoEError(f"request {i}: {error}") from None


async def _run(session, prompt_ids, max_new_tokens, eos, after_step=None):
    """Greedy decode as :func:`sw.runtime.decode.generate` does; returns tokens, digest, step cycles, last logits.

    ``after_step(cost)`` (a coroutine function, optional) runs after each step with the step's cost."""
    await session.reset()
    digest, tokens, steps = hashlib.sha256(), [], []
    total = len(prompt_ids) + max(max_new_tokens, 1) - 1
    token = prompt_ids[0]
    logits = None
    for pos in range(total):
        logits, cost = await session.step(token, pos, greedy=True)
        chosen = cost.pop("chip_token")
        steps.append(cost["cycles"])
        digest.update(logits.tobytes())
        if after_step is not None:
            await after_step(cost)
        if pos + 1 < len(prompt_ids):
            token = prompt_ids[pos + 1]
            continue
        if max_new_tokens == 0:
            break
        token = chosen if chosen is not None else int(np.argmax(logits))
        tokens.append(token)
        if len(tokens) == max_new_tokens or token == eos:
            break
    return tokens, digest.hexdigest(), steps, logits


LOOKAHEAD = 4


async def serve(device, library, requests, *, slots=4, policy="lru", mode="ddr", batch=8, prefetch=True,
                lookahead=LOOKAHEAD, orchestration="host", progress=None):
    """Serve ``requests`` (dicts: ``prompt_ids``, ``max_new_tokens``, optional ``expert``) on ``device``.

    A request may also say ``"stop_at_eos": False`` to generate all ``max_new_tokens`` (benchmarks).

    Parameters
    ----------
    device : sw.runtime.device.Device
        Built from ``library.target``.
    library : sw.coe.library.Library
    slots : int
        HBM expert slots (ignored with ``mode="hbm"``: one per expert).
    policy : str
        Eviction policy (:data:`sw.coe.cache.POLICIES`) among the slots whose experts no scheduled pair
        needs (see the module docstring).
    mode : str
        ``"ddr"``, ``"host"`` or ``"hbm"`` (see the module docstring).
    batch : int
        Requests routed together.
    prefetch : bool
        Copy upcoming pairs' experts while the chip routes and decodes (``"ddr"`` only); False is ``lookahead=0``.
    lookahead : int
        How many scheduled pairs after the running one the prefetch looks at (at most ``slots - 1`` are
        used: each of them may hold a slot); 1 copies only the next pair's expert.
    orchestration : str
        Who issues each step's kernels (:mod:`sw.runtime.decode`): ``"host"``, or ``"chip"`` (the
        sequencer walks launch lists; every slot then holds its own, see :mod:`sw.coe.slots`). The router
        and the experts run the same way.
    progress : callable, optional
        ``progress(done, total)`` after each request.

    Returns
    -------
    dict
        ``requests``: per request (in the given order) ``expert``, ``routed``, ``hit``, ``switch_cycles``,
        ``hidden_cycles``, ``router_cycles``, ``ttft_cycles``, ``latency_cycles`` (from its batch's start:
        when it was routed), ``decode_cycles``, ``tokens``, ``logits_sha``, ``slot``, ``order``; and the
        trace's ``summary``.

    Raises
    ------
    CoEError
        A bad request (checked before anything is loaded), slots that do not fit, an unknown policy,
        mode or orchestration, a negative lookahead.
    """
    if mode not in MODES:
        raise CoEError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
        raise CoEError(f"lookahead must be a whole number of requests >= 0, not {lookahead!r}")
    check_requests(library, requests)
    names = list(library.experts)
    nslots = len(names) if mode == "hbm" else slots
    p = make_plan(library, nslots, experts_in_ddr=mode == "ddr", orchestration=orchestration)
    cache = SlotCache(nslots, p.slot_bytes, p.base, p.hbm_capacity, policy)
    m = library.target.memory
    # Each pair in the window may hold a slot; the running pair needs one more.
    depth = min(lookahead, nslots - 1) if prefetch and mode == "ddr" else 0
    start = time.perf_counter()
    # The standing state, through the back door: router, shared regions (and each slot's launch lists), expert
    # images in their tier.
    models = [slot_model(library.arch, p, s) for s in range(nslots)]
    router = library.router
    for name, words in router.image.items():
        await device.write(HBM, router.memory_map[name].offset, words)
    for s, model in enumerate(models):
        for name, words in model.image.items():
            if s == 0 or name in model.launch_lists.values():
                await device.write(HBM, model.memory_map[name].offset, words)
    if mode == "ddr":
        for i, name in enumerate(names):
            await device.write(DDR, i * p.slot_bytes, library.image(name))
    elif mode == "hbm":
        for name in names:
            slot, _ = cache.allocate(name)
            await device.write(HBM, p.slot_offset(slot), library.image(name))
    setup_s = time.perf_counter() - start

    async def switch(name, slot):
        if mode == "ddr":
            return await device.copy(DDR, names.index(name) * p.slot_bytes, HBM, p.slot_offset(slot), p.slot_bytes)
        await device.write(HBM, p.slot_offset(slot), library.image(name))
        return host_cycles(p.slot_bytes, m, m.hbm)

    eos_r, eos_e = router.shape.eos_token_id, library.arch.shape.eos_token_id
    out = [None] * len(requests)
    queue = []                # scheduled pairs in run order: (request index, expert, its batch's start cycle)
    batches = list(range(0, len(requests), batch))[::-1]
    # ``pos``: the pair running (or next to run); the copy in flight ({"expert", "cover"}: chip cycles of kernels,
    # Program Loads and sequencing since it started), the collected copies not yet credited to a request
    # (expert -> (cycles, waited)), and one copy's cycles.
    st = {"clock": 0, "pos": 0, "copying": None, "copies": {}, "copy_cycles": None}
    routed = {}

    def ahead(extra=()):
        """The experts of the scheduled pairs from ``pos`` on, then of ``extra`` (a batch being routed)."""
        return [e for _, e, _ in queue[st["pos"]:]] + list(extra)

    def place(name, extra=()):
        """A slot for ``name``: free, else the policy's pick among slots whose experts no known pair needs, else
        the slot of the expert needed last (never one of the window's, nor the copy in flight's)."""
        known = ahead(extra)
        window = set(known[:1 + depth]) | {name}
        if st["copying"] is not None:
            window.add(st["copying"]["expert"])
        resident = {e["expert"] for e in cache.entries.values()}
        if len(cache.entries) < cache.slots or resident - set(known) - window:
            pinned = set(known) | window
        else:
            spare = resident - window
            pinned = resident - {max(spare, key=known.index)} if spare else resident
        return cache.allocate(name, pinned=pinned)[0]

    async def route(i, extra):
        """The router's class for request ``i`` (its prompt's steps on the chip), prefetching meanwhile."""
        session = Session(device, router, orchestration=orchestration)
        _, _, steps, logits = await _run(session, requests[i]["prompt_ids"], 0, eos_r,
                                         pump(extra, running=False) if depth else None)
        return library.classes[int(np.argmax(logits[:len(library.classes)]))], sum(steps)

    async def admit():
        """Route the next batch on the chip and append its pairs, resident experts first, to the queue. Each
        expert chosen may start copying at once, beside the routing of the rest of the batch."""
        b0 = batches.pop()
        idx, t0, chosen = list(range(b0, min(b0 + batch, len(requests)))), st["clock"], {}
        for i in idx:
            r = requests[i]
            if r.get("expert") is not None:
                chosen[i], routed[i] = r["expert"], 0
                continue
            chosen[i], routed[i] = await route(i, [chosen[j] for j in idx if j in chosen])
            st["clock"] += routed[i]
            if depth and st["copying"] is None:
                await start_next([chosen[j] for j in idx if j in chosen], running=False)
        first = {}
        for i in idx:
            first.setdefault(chosen[i], i)
        queued = {e for _, e, _ in queue}
        for i in sorted(idx, key=lambda i: (cache.where(chosen[i]) is None and chosen[i] not in queued,
                                            first[chosen[i]], i)):
            queue.append((i, chosen[i], t0))

    async def collect():
        """Wait for the copy in flight; the chip's wait delays everything after it."""
        got = await device.wait_copy()
        st["clock"] += got["waited"]
        st["copies"][st["copying"]["expert"]] = (got["cycles"], got["waited"])
        st["copy_cycles"], st["copying"] = got["cycles"], None

    async def start_next(extra=(), running=True):
        """With the copy engine idle, start copying the first absent expert of the window: the ``depth`` pairs
        after the running one (or, between pairs, the next pair and the ``depth`` after it), continued by
        ``extra``, the experts of a batch being routed."""
        window = ahead(extra)[:1 + depth]
        nxt = next((e for e in (window[1:] if running else window) if cache.where(e) is None), None)
        if nxt is None:
            return
        slot = place(nxt, extra)
        await device.start_copy(DDR, names.index(nxt) * p.slot_bytes, HBM, p.slot_offset(slot), p.slot_bytes)
        st["copying"] = {"expert": nxt, "cover": 0}

    def pump(extra=(), running=True):
        async def after_step(cost):
            c = st["copying"]
            if c is None:
                return
            # The controller's estimate that the copy is done (the device measures what it really waited).
            c["cover"] += cost["kernel_cycles"] + cost["program_load_cycles"] + cost["sequencer_cycles"]
            if st["copy_cycles"] is not None and c["cover"] >= st["copy_cycles"]:
                await collect()
                await start_next(extra, running)
        return after_step

    try:
        while True:
            # A batch is admitted once the window reaches past the queue when that costs no chip time (its
            # experts are named), else only when the queue has run out: routing it early would stall the pairs
            # still queued, and its experts' copies start beside its own routing anyway.
            while batches and (len(queue) <= st["pos"] or (len(queue) <= st["pos"] + depth and not any(
                    requests[i].get("expert") is None for i in range(batches[-1], min(batches[-1] + batch,
                                                                                       len(requests)))))):
                await admit()
            pos = st["pos"]
            if pos == len(queue):
                break
            i, name, t0 = queue[pos]
            r = requests[i]
            if st["copying"] is not None and st["copying"]["expert"] == name:
                await collect()
            slot = cache.where(name)
            hit = slot is not None and name not in st["copies"]
            switch_cycles = hidden = 0
            if name in st["copies"]:
                switch_cycles, waited = st["copies"].pop(name)
                hidden = switch_cycles - waited
            elif slot is None:
                if st["copying"] is not None:
                    await collect()           # the copy engine is needed now
                slot = place(name)
                switch_cycles = await switch(name, slot)
                st["clock"] += switch_cycles
                if mode == "ddr":
                    st["copy_cycles"] = switch_cycles
            cache.use(name)
            begin = st["clock"]
            if depth and st["copying"] is None:
                await start_next()
            tokens, sha, steps, _ = await _run(Session(device, models[slot], orchestration=orchestration),
                                               r["prompt_ids"], r["max_new_tokens"],
                                               eos_e if r.get("stop_at_eos", True) else None,
                                               pump() if depth else None)
            decode = sum(steps)
            st["clock"] += decode
            ttft = begin + sum(steps[:len(r["prompt_ids"])]) - t0
            out[i] = {"index": i, "expert": name, "routed": r.get("expert") is None,
                      "hit": hit, "slot": slot, "order": pos, "router_cycles": routed[i],
                      "switch_cycles": switch_cycles, "hidden_cycles": hidden, "ttft_cycles": ttft,
                      "decode_cycles": decode, "latency_cycles": st["clock"] - t0, "tokens": tokens,
                      "logits_sha": sha, "steps": len(steps)}
            st["pos"] = pos + 1
            if progress:
                progress(pos + 1, len(requests))
    except BaseException:
        # A failed route or decode leaves the copy engine idle for whatever comes next.
        if st["copying"] is not None:
            await device.wait_copy()
        raise
    clock = st["clock"]
    stats = await device.tier_stats()
    return {"requests": out, "summary": summarize(out, clock, library.target.clock_hz),
            "plan": {"slots": nslots, "slot_bytes": p.slot_bytes, "router_bytes": p.router_bytes,
                     "shared_bytes": p.shared_bytes, "base": p.base, "max_slots": p.max_slots,
                     "ddr_bytes": p.ddr_bytes, "lists_bytes": p.lists_bytes},
            "mode": mode, "policy": policy, "prefetch": depth > 0, "lookahead": depth, "backend": device.backend,
            "orchestration": orchestration,
            "overlap": "measured" if device.backend == "rtl" else "modelled", "capacity_checks": cache.checks,
            "capacity_violations": cache.violations + sum(s.get("errors", 0) for s in stats.values()),
            "total_cycles": clock, "setup_wall_s": setup_s, "wall_s": time.perf_counter() - start}


def summarize(rows, total_cycles, clock_hz):
    """Hit rate, switch and hidden cycles, mean and p99 latency and time to first token, throughput."""
    lat = np.array([r["latency_cycles"] for r in rows], float)
    ttft = np.array([r["ttft_cycles"] for r in rows], float)
    switched = sum(r["switch_cycles"] for r in rows)
    tokens = sum(len(r["tokens"]) for r in rows)
    return {"requests": len(rows), "hit_rate": sum(r["hit"] for r in rows) / len(rows),
            "switches": sum(1 for r in rows if r["switch_cycles"]), "switch_cycles": switched,
            "hidden_cycles": sum(r["hidden_cycles"] for r in rows),
            "hidden_fraction": sum(r["hidden_cycles"] for r in rows) / switched if switched else 0.0,
            "mean_latency_cycles": float(lat.mean()), "p99_latency_cycles": float(np.percentile(lat, 99)),
            "mean_ttft_cycles": float(ttft.mean()), "tokens": tokens, "total_cycles": total_cycles,
            "tokens_per_s": tokens * clock_hz / total_cycles if total_cycles else 0.0}
