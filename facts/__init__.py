"""Facts the hardware and the software share, each defined once.

The bottom layer of the project: ``facts`` imports only the standard library
and numpy; ``hw``, ``sw`` and ``cosim`` import it, never the other way round
(docs/architecture.md). A constant that the RTL builds from and the software
must agree with (a format word, a status code, a table) lives here.
"""
