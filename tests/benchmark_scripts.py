"""The scripts of benchmarks/ as modules for the tests (benchmarks/ is a folder of scripts, not a package)."""
import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name):
    """A freshly executed module of benchmarks/<name>.py: a new object at every call, so what one test
    monkeypatches on it never reaches another test."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
