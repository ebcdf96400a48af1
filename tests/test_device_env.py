"""scripts/device_env.sh, the shared set-up of device commands: device_call_setup installs the carried wheels once
per machine and puts the repository's packages on the import path."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wheel(folder, name="carried_pkg", version="1.0"):
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def _run(repo, body):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    env.pop("PYTHONUNBUFFERED", None)
    script = f". {ROOT / 'scripts' / 'device_env.sh'}\n{body}\n"
    return subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def test_device_call_setup_installs_once_and_imports_the_repo(tmp_path):
    repo, site = tmp_path / "repo", tmp_path / "site"
    _wheel(repo / ".whl")
    (repo / "kernels").mkdir()
    (repo / "kernels" / "__init__.py").write_text("NAME = 'repo kernels'\n")
    show = ('python3 -c "import carried_pkg, gka_kernels; print(carried_pkg.VERSION, gka_kernels.NAME)"; '
            'echo "unbuffered=$PYTHONUNBUFFERED"')
    proc = _run(repo, f"device_call_setup {site} && {show}")
    assert proc.returncode == 0, proc.stderr
    assert "1.0 repo kernels" in proc.stdout and "unbuffered=1" in proc.stdout
    assert (site / ".carried_wheels").exists()
    # a warm machine: nothing is installed again (a newer wheel stays uninstalled), the imports still work
    (repo / ".whl" / "carried_pkg-1.0-py3-none-any.whl").unlink()
    _wheel(repo / ".whl", version="2.0")
    proc = _run(repo, f"device_call_setup {site} && {show}")
    assert proc.returncode == 0 and "1.0 repo kernels" in proc.stdout, proc.stderr


def test_device_call_setup_reports_a_failed_install(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".whl").mkdir(parents=True)
    (repo / ".whl" / "broken-1.0-py3-none-any.whl").write_text("not a zip")
    proc = _run(repo, f"device_call_setup {tmp_path / 'site'}; echo rc=$?")
    assert "rc=1" in proc.stdout and "installing the wheels of .whl/ failed" in proc.stderr
    assert not (tmp_path / "site" / ".carried_wheels").exists()
