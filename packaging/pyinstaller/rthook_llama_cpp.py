"""Runtime hook: point llama-cpp-python at the shared libraries bundled by hook-llama_cpp.py
(llama_cpp reads LLAMA_CPP_LIB_PATH when it is first imported). A value the user set wins."""

import os
import sys

_bundle = getattr(sys, "_MEIPASS", None)
if _bundle is not None:
    os.environ.setdefault("LLAMA_CPP_LIB_PATH", os.path.join(_bundle, "llama_cpp", "lib"))
