"""Merge identical modules of Amaranth's Verilog before Verilator sees them.

Amaranth writes one module per instance (``top.array.pcu_0_0``,
``top.array.pcu_0_1``, ...), so Verilator would compile the 16 PCUs of a 4x8
array 16 times. Two module bodies that differ only in their own name, in the
globally numbered names of ports (``\\port$13199$23``) and in Yosys's numbered
dummy trigger registers describe the same hardware: :func:`dedup` keeps one
of them and points every instantiation at it.

Only names are rewritten; the statements, their order and every width stay as
Yosys wrote them, so the simulated behaviour is the same signal for signal.
"""

import hashlib
import re

# A module with the attribute lines before it; group 2 is its name.
_MODULE = re.compile(r"^((?:\(\*[^\n]*\*\)\n)*)module (\S+?) ?\(.*?^endmodule\n", re.S | re.M)
# An instantiation of a submodule (always an escaped name: it holds dots): indent, module, instance, connections.
_INSTANCE = re.compile(r"^(\s+)(\\\S+) ( ?)(\\\S+ |\w+) \((.*?)\);", re.S | re.M)
_PORT_NAME = re.compile(r"\\port\$\d+\$\d+ ")
_TRIGGER = re.compile(r"dump_module\$\d+")


def dedup(text, *, keep=("top",)):
    """Return ``text`` with identical modules merged, and how many definitions were dropped.

    Parameters
    ----------
    text : str
        Verilog from ``amaranth.back.verilog.convert``: one module per instance.
    keep : iterable of str
        Modules left with their own name and port names (the toplevel, modules
        whose signals a testbench names); their submodules may still merge.

    Returns
    -------
    (str, int)
        The rewritten Verilog and the number of module definitions removed.
    """
    found = list(_MODULE.finditer(text))
    if not found:
        return text, 0
    bodies = {m.group(2): m.group(0) for m in found}
    keep = set(keep)
    ports, rep, canon, first = {}, {}, {}, {}

    def resolve(name):
        # Bottom-up: a module's canonical text names its children by their representatives.
        if name in canon:
            return
        canon[name] = ""

        def instance(m):
            child = m.group(2)
            if child not in bodies:
                return m.group(0)
            resolve(child)
            conns = _PORT_NAME.sub(lambda p: ports[child].get(p.group(0), p.group(0)), m.group(5))
            return f"{m.group(1)}{rep[child]} {m.group(4)}({conns});"

        pieces = []
        last = 0
        body = bodies[name]
        for m in _INSTANCE.finditer(body):
            pieces += [body[last:m.start()], instance(m)]
            last = m.end()
        pieces.append(body[last:])
        own = {}
        if name not in keep:
            # This module's globally numbered port names, in order of first use, become local ones.
            for piece in pieces[::2]:
                for port in _PORT_NAME.findall(piece):
                    own.setdefault(port, f"\\port$p{len(own)} ")
        ports[name] = own
        body = "".join(p if i % 2 else _PORT_NAME.sub(lambda q: own.get(q.group(0), q.group(0)), p)
                       for i, p in enumerate(pieces))
        triggers = {}
        canon[name] = body = _TRIGGER.sub(
            lambda t: triggers.setdefault(t.group(0), f"dump_module${len(triggers)}"), body)
        if name in keep:
            rep[name] = name
            return
        anonymous = body.replace(f"module {name} ", "module \\$self ", 1)
        rep[name] = first.setdefault(hashlib.sha256(anonymous.encode()).hexdigest(), name)

    for name in bodies:
        resolve(name)
    out, last = [], 0
    for m in found:
        out.append(text[last:m.start()])
        if rep[m.group(2)] == m.group(2):
            out.append(canon[m.group(2)])
        last = m.end()
    out.append(text[last:])
    return "".join(out), sum(rep[name] != name for name in bodies)
