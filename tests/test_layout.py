"""The test suite's own layout (tests/conftest.py): test files import helper modules, never each other; no two
files share a name (pytest imports them by file name from every folder); every test that needs CUDA lives
in tests/gpu with the ``gpu`` marker."""
import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FILES = sorted(TESTS.rglob("*.py"))
TEST_FILES = [p for p in FILES if p.name.startswith("test_")]
# CUDA tests of the model-family files, still beside their CPU tests; remove a name once its file's CUDA
# tests are in tests/gpu (the strict xfail then fails as a reminder)
CUDA_TESTS_TO_MOVE = set()


def _rel(p):
    return str(p.relative_to(TESTS))


def _imported_modules(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _checks_cuda(path):
    """Whether the file asks ``torch.cuda.is_available()`` (a test that runs only with a GPU)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "is_available"
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "cuda"):
            return True
    return False


def test_the_folders_mirror_the_package():
    folders = {p.parent.name for p in TEST_FILES if p.parent != TESTS}
    assert {"ops", "data", "engine", "benchmarks", "gpu"} <= folders, folders


@pytest.mark.parametrize("path", TEST_FILES, ids=_rel)
def test_no_test_file_imports_another(path):
    tests = {p.stem for p in TEST_FILES}
    assert not [m for m in _imported_modules(path) if m.split(".")[0] in tests]


def test_file_names_are_unique():
    names = [p.name for p in FILES]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.xfail(
    strict=True, reason="CUDA tests not yet moved to tests/gpu")) if p.name in CUDA_TESTS_TO_MOVE else p
    for p in TEST_FILES], ids=_rel)
def test_cuda_tests_live_in_gpu_with_the_marker(path):
    in_gpu = path.parent == TESTS / "gpu"
    assert _checks_cuda(path) <= in_gpu, f"{_rel(path)} has CUDA-only tests outside tests/gpu"
    if in_gpu:
        assert "pytest.mark.gpu" in path.read_text(), f"{_rel(path)} lacks pytestmark = pytest.mark.gpu"


def test_the_gpu_script_runs_every_gpu_test_file():
    """scripts/gpu_benchmarks.sh's `tests` stage names the tests/gpu files one by one (kernel tests before the
    slow compile tests); a new file there must be added to it or it never runs on the device."""
    script = (TESTS.parent / "scripts" / "gpu_benchmarks.sh").read_text()
    missing = [p.name for p in sorted((TESTS / "gpu").glob("test_*.py")) if f"tests/gpu/{p.name}" not in script]
    assert not missing, f"scripts/gpu_benchmarks.sh's tests stage does not run {missing}"
    assert script.index("tests/gpu/test_gka_triton_gpu.py") < script.index("tests/gpu/test_compile_gpu.py")
