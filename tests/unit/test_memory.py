"""sensorlake.memory: the worker entry point runs the module it is given, and trims its heap."""

from __future__ import annotations

import json
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


def test_the_memory_report_says_where_the_resident_memory_is(tmp_path):
    """RSS split by mapping kind, glibc's arenas, and with tracemalloc on, the sites that grew."""
    script = (
        "import json, sys\n"
        "from sensorlake import memory\n"
        "first = memory.memory_report()\n"
        "kept = [bytes(1000) for _ in range(20000)]  # ~20 MB kept\n"
        "r = memory.memory_report(first)\n"
        "print(json.dumps({k: v for k, v in r.items() if not k.startswith('_')}))\n")
    out = subprocess.run([sys.executable, "-c", script], env={"PYTHONTRACEMALLOC": "2",
                         "PYTHONPATH": memory.__file__.rsplit("/sensorlake/", 1)[0]},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["heap_rss_kb"] + r["anon_rss_kb"] + r["file_rss_kb"] <= r["rss_kb"] + 1024
    assert r["in_use_kb"] >= 19_000  # the kept bytes objects are malloc'd by glibc
    grown = r["sites_grown"][0]
    assert grown["kb"] >= 19_000 and grown["count"] >= 20_000
    assert any('"<string>", line 4' in line for line in grown["where"])  # the line that keeps them


def test_the_report_runs_from_the_environment(tmp_path):
    report = tmp_path / "memory.jsonl"
    script = ("import os, sys, time\nfrom sensorlake import memory\nmemory.start_from_environment()\n"
              "deadline = time.time() + 30\n"
              "while time.time() < deadline and (not os.path.exists(sys.argv[1])\n"
              "                                  or open(sys.argv[1]).read().count(chr(10)) < 2):\n"
              "    time.sleep(0.05)\n")
    out = subprocess.run([sys.executable, "-c", script, str(report)], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": memory.__file__.rsplit("/sensorlake/", 1)[0],
                              "SENSORLAKE_MEMORY_REPORT": str(report), "SENSORLAKE_MEMORY_REPORT_S": "0.1"})
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) >= 2 and all(line["rss_kb"] > 0 and "in_use_kb" in line for line in lines)
