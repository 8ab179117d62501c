"""PyInstaller hook for latex2sympy2_extended (math-verify's LaTeX parser, for `localr1 eval`).

At import it picks one of its three ANTLR-generated parsers by antlr4-python3-runtime's version,
read with importlib.metadata: that distribution's metadata must be in the bundle, or the import
fails with "Unsupported ANTLR version" (PyInstaller 6 finds the literal `version(...)` call by
itself; listed here so the bundle does not depend on that). The two parsers generated for other
runtimes cannot run with the bundled one, so they stay out.
"""

from importlib.metadata import version

from PyInstaller.utils.hooks import copy_metadata

datas = copy_metadata("antlr4-python3-runtime")
# "4.13.2" -> latex2sympy2_extended.gen.antlr4_13_2
_bundled = "antlr" + "_".join(version("antlr4-python3-runtime").split(".")[:3])
excludedimports = [f"latex2sympy2_extended.gen.{name}"
                   for name in ("antlr4_9_3", "antlr4_11_0", "antlr4_13_2") if name != _bundled]
