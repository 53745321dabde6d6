"""ented: reference-based face restoration.

Importing this package is cheap on purpose: torch, onnxruntime and dlib are imported only by
the modules that need them, so `ented --help` starts instantly.
"""

__version__ = "0.1.0"
