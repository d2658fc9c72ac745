"""regopy (rego-cpp's Python binding), imported so that it cannot break the C++ extensions loaded after it.

``librego_shared.so`` exports its own ``operator new`` / ``operator delete``. When it is the first library
of the process to need libstdc++, the dynamic linker binds libstdc++'s own references to those operators
to rego-cpp's, and every C++ extension imported afterwards allocates through one allocator and frees
through the other: a broker worker that had decided a policy before its first encrypted query (TenSEAL,
imported on first use) aborted with ``free(): invalid pointer``. Loading libstdc++ first — a no-op when
numpy, TenSEAL or pyarrow already did — keeps its operators its own.

Import regopy through this module only, and lazily (inside the function that compiles or evaluates):
importing this module loads rego-cpp.
"""

from __future__ import annotations

import ctypes
import sys

_LIBSTDCXX = None
if sys.platform.startswith("linux"):
    try:
        _LIBSTDCXX = ctypes.CDLL("libstdc++.so.6")
    except OSError:  # pragma: no cover - without libstdc++ regopy does not load either
        pass

from regopy import Interpreter  # noqa: E402
from regopy.rego_shared import rego_output_ok  # noqa: E402

__all__ = ["Interpreter", "rego_output_ok"]
