"""PyInstaller hook for llama-cpp-python.

llama_cpp loads libllama / libggml* with ctypes from llama_cpp/lib at run time, so PyInstaller's
import analysis never sees them ("Shared library with base name 'llama' not found",
llama-cpp-python #1475). Bundle every shared library of that folder (CPU, CUDA, Metal or Vulkan
backends alike) at the same relative place, plus the package's data.
"""

from pathlib import Path

from PyInstaller.utils.hooks import collect_data_files, get_package_paths

_, package_dir = get_package_paths("llama_cpp")
lib_dir = Path(package_dir) / "lib"
binaries = [(str(path), "llama_cpp/lib") for path in sorted(lib_dir.glob("*"))
            if path.is_file() and any(s in path.name for s in (".so", ".dylib", ".dll"))]
datas = collect_data_files("llama_cpp", excludes=["lib/*"])
hiddenimports = ["llama_cpp.llama_chat_format", "llama_cpp.llama_grammar"]
