"""sensorlake.memory: the worker entry point runs the module it is given, and trims its heap."""

from __future__ import annotations

import subprocess
import sys
import threading

from sensorlake import memory


def test_trim_heap_periodically_starts_one_trim_thread_on_glibc():
    def trimmers():
        return sum(t.name == "malloc-trim" for t in threading.enumerate())

    assert memory.trim_heap_periodically(interval_s=0.01) is True  # Debian: glibc
    assert memory.trim_heap_periodically(interval_s=0.01) is True
    assert trimmers() == 1  # one per process, however often it is asked


def test_the_entry_point_runs_the_module_as_main(tmp_path):
    (tmp_path / "hello_worker.py").write_text(
        "import sys, threading\n"
        "if __name__ == '__main__':\n"
        "    print('main', [t.name for t in threading.enumerate() if t.name == 'malloc-trim'])\n")
    out = subprocess.run([sys.executable, "-m", "sensorlake.memory", "hello_worker"], cwd=tmp_path,
                         env={"PYTHONPATH": f"{tmp_path}:{memory.__file__.rsplit('/sensorlake/', 1)[0]}"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "main ['malloc-trim']"
