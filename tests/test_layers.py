"""Imports point one way: facts -> hw -> sw -> cosim -> cli (docs/architecture.md).

Every ``import`` in every .py file under the layers' folders is read from the
syntax tree, at any depth (inside functions too), and checked against the
order: a module may import its own layer and the layers below it. ``facts``
imports only the standard library and numpy. bench/ and tests/ sit above all
layers and are not scanned.
"""

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("facts", "hw", "sw", "cosim", "cli")
FACTS_MAY_IMPORT = set(sys.stdlib_module_names) | {"numpy"}


def imported_modules(path, package):
    """(line, absolute module name) of each import in the file at ``path``, a module of ``package``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            yield node.lineno, name


def back_edges(root, allowed=frozenset()):
    """Imports under ``root`` that break the order, as ``"path:line imports module"`` strings.

    ``allowed`` holds paths (relative to ``root``, with /) whose imports are the command line's.
    """
    found = []
    for rank, layer in enumerate(LAYERS):
        for path in sorted((root / layer).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            package = ".".join(path.relative_to(root).parts[:-1])  # what relative imports start from
            own = len(LAYERS) - 1 if rel in allowed else rank
            for line, name in imported_modules(path, package):
                top = name.split(".")[0]
                if top in LAYERS:
                    bad = LAYERS.index(top) > own
                else:
                    bad = layer == "facts" and top not in FACTS_MAY_IMPORT
                if bad:
                    found.append(f"{rel}:{line} imports {name}")
    return found


def test_imports_point_one_way():
    edges = back_edges(REPO)
    assert not edges, "imports against facts -> hw -> sw -> cosim -> cli:\n" + "\n".join(edges)


def test_every_layer_is_scanned():
    for layer in LAYERS:
        assert (REPO / layer / "__init__.py").is_file(), layer


def test_a_back_edge_is_found(tmp_path):
    files = {
        "facts/__init__.py": "import math\nimport numpy as np\n",
        "facts/bad.py": "import amaranth\nfrom . import other\n",
        "hw/__init__.py": "from facts import bitstream\n",
        "hw/tile/__init__.py": "",
        "hw/tile/bad.py": "def f():\n    if True:\n        from sw.golden import tail\n    return tail\n",
        "hw/tile/rel.py": "from ..arith import fma\nfrom ...sw import x\n",
        "sw/__init__.py": "import hw.tile\nfrom facts.bitstream import MAGIC\n",
        "sw/demo.py": "from cosim import harness\n",
        "sw/cli.py": "import cosim\nfrom cli import demo\n",
        "cosim/__init__.py": "from sw.runtime import backends\nimport cli.demo\n",
        "cli/__init__.py": "import cosim, sw, hw, facts\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert back_edges(tmp_path, {"sw/cli.py"}) == [
        "facts/bad.py:1 imports amaranth",
        "hw/tile/bad.py:3 imports sw.golden",
        "hw/tile/rel.py:2 imports sw",
        "sw/demo.py:1 imports cosim",
        "cosim/__init__.py:2 imports cli.demo",
    ]
