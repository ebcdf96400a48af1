"""Running a check script on the CPU under TRITON_INTERPRET=1 in a fresh subprocess (the interpreter is chosen when
kernels are decorated, so it never forces interpreter mode on other tests), and reading the JSON it prints on lines
that start with a tag (`print("RESULT" + json.dumps(...))`)."""
import json
import os
import subprocess
import sys


def run_interpreted(script: str, timeout: float = 600) -> str:
    """stdout of `python -c script` under TRITON_INTERPRET=1 (one OpenMP thread); fails the test on a non-zero exit."""
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def tagged_json(stdout: str, tag: str):
    """The JSON of the last stdout line that starts with `tag`."""
    line = [ln for ln in stdout.splitlines() if ln.startswith(tag)][-1]
    return json.loads(line[len(tag):])
