"""The command line: the ``openrdu`` command and its demos, the top layer.

Only this package (with bench/ and tests/) may import every layer: it picks a
backend by name from ``sw.runtime.backends`` after importing ``cosim``.
"""
