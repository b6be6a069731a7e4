"""Fetches what the local stack runs, into a reusable cache; safe to run again.

- Mosquitto: Debian packages (apt-get), the broker and its clients (mosquitto_sub: the compose
  health check, also run by the tests), when missing and we are root.
- Flink: the PyPI distribution (apache-flink + apache-flink-libraries) in a venv of its own,
  because it pins an old apache-beam and pyarrow that cannot share a venv with the pipeline.
- Kafka broker and the Beam job server / expansion service: jars from Maven Central (mvn).
Each part is complete when its marker file exists, so an interrupted install resumes; the services
jar is rebuilt when flink/jobserver (pom or Java sources) changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sensorlake.settings import BEAM_VERSION, FLINK_VERSION, KAFKA_VERSION, REPO_ROOT, Settings

MARKER = ".complete"


class InstallError(RuntimeError):
    """An install step failed; the message says which and where its log is."""


@dataclass(frozen=True)
class Paths:
    cache: Path

    @property
    def flink_venv(self) -> Path:
        return self.cache / f"flink-{FLINK_VERSION}"

    @property
    def flink_home(self) -> Path:
        return self.flink_venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "pyflink"

    @property
    def kafka_lib(self) -> Path:
        return self.cache / f"kafka-{KAFKA_VERSION}" / "lib"

    @property
    def beam_services(self) -> Path:
        return self.cache / f"beam-services-{BEAM_VERSION}-flink-{FLINK_VERSION}"

    @property
    def beam_job_jar(self) -> Path:
        """What a job needs of the classpath, in one file (the job server stages it with each job)."""
        return self.beam_services / "sensorlake-beam-job.jar"

    @property
    def beam_classpath(self) -> str:
        return f"{self.beam_services / 'sensorlake-beam-services.jar'}:{self.beam_services / 'lib'}/*"

    @property
    def logs(self) -> Path:
        return self.cache / "install-logs"


def _say(msg: str) -> None:
    print(f"[install] {msg}", flush=True)


def _run(cmd: list[str], log: Path, what: str, env: dict | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise InstallError(f"{what} failed (exit {proc.returncode}); log: {log}\n{tail}")


# Held (fcntl) by a running apt-get, apt, unattended-upgrades or dpkg.
APT_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock",
             "/var/cache/apt/archives/lock")
APT_LOCK_WAIT_S = 600.0
_apt_updated = False


def _apt_lock_held() -> str | None:
    """The first apt/dpkg lock another process holds, or None."""
    for path in APT_LOCKS:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError:
            return path
        finally:
            os.close(fd)
    return None


def apt_install(packages: list[str], why: str, wait_s: float = APT_LOCK_WAIT_S) -> None:
    """apt-get install, as root; waits (bounded, saying so) while another apt or dpkg holds the lock."""
    global _apt_updated
    if os.geteuid() != 0:
        raise InstallError(f"{why} needs {' '.join(packages)}: run `sudo apt-get install -y {' '.join(packages)}`")
    deadline = time.monotonic() + wait_s
    held = _apt_lock_held()
    if held:
        _say(f"waiting for another apt/dpkg to finish ({held} is locked; up to {wait_s:.0f} s)")
    while held and time.monotonic() < deadline:
        time.sleep(2)
        held = _apt_lock_held()
    if held:
        raise InstallError(f"apt is still busy after {wait_s:.0f} s ({held} is locked by another process); "
                           f"run this again when it has finished")
    # The lock can be taken again between our check and apt's: apt then waits for it too.
    wait = ["-o", f"DPkg::Lock::Timeout={max(1, int(deadline - time.monotonic()))}"]
    log = Path("/tmp/sensorlake-apt.log")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _say(f"installing {' '.join(packages)} (apt-get) for {why}")
    if not _apt_updated:
        _run(["apt-get", *wait, "update", "-q"], log, "apt-get update", env=env)
        _apt_updated = True
    _run(["apt-get", *wait, "install", "-y", "-q", *packages], log, f"apt-get install {' '.join(packages)}", env=env)


def ensure_mosquitto() -> str:
    """The broker, mosquitto_passwd (the start script hashes passwords with it) and the command-line
    clients (mosquitto_sub/pub: for watching readings, and the tests use them)."""
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path and all(shutil.which(c) for c in ("mosquitto_passwd", "mosquitto_sub", "mosquitto_pub")):
        return path
    apt_install(["mosquitto", "mosquitto-clients"], "the MQTT broker")
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def ensure_flink(paths: Paths) -> Path:
    if (paths.flink_venv / MARKER).exists():
        return paths.flink_home
    _say(f"installing Flink {FLINK_VERSION} from PyPI into {paths.flink_venv} (about 400 MB, a few minutes)")
    if paths.flink_venv.exists():
        shutil.rmtree(paths.flink_venv)
    _run([sys.executable, "-m", "venv", str(paths.flink_venv)], paths.logs / "flink-venv.log", "creating the Flink venv")
    _run([str(paths.flink_venv / "bin" / "pip"), "install", "--progress-bar", "off",
          f"apache-flink=={FLINK_VERSION}", f"apache-flink-libraries=={FLINK_VERSION}"],
         paths.logs / "flink-pip.log", "pip install apache-flink")
    if not (paths.flink_home / "bin" / "jobmanager.sh").exists():
        raise InstallError(f"Flink distribution not found at {paths.flink_home}")
    (paths.flink_venv / MARKER).touch()
    return paths.flink_home


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise InstallError("Maven (mvn) is needed to fetch the Kafka and Beam jars: apt-get install -y maven")
    return mvn


def ensure_kafka(paths: Paths) -> Path:
    done = paths.kafka_lib.parent / MARKER
    if done.exists():
        return paths.kafka_lib
    _say(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central")
    _run([_mvn(), "-B", "-q", "-f", str(REPO_ROOT / "sensorlake" / "local" / "kafka" / "pom.xml"),
          "dependency:copy-dependencies", f"-DoutputDirectory={paths.kafka_lib}"],
         paths.logs / "kafka-mvn.log", "mvn dependency:copy-dependencies (Kafka)")
    done.touch()
    return paths.kafka_lib


def _sources_digest(project: Path) -> str:
    """What the services jar is built from (pom and Java sources): a change rebuilds it."""
    h = hashlib.sha256()
    for f in sorted(p for p in [project / "pom.xml", *(project / "src").rglob("*")] if p.is_file()):
        h.update(f.relative_to(project).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def ensure_beam_services(paths: Paths) -> Path:
    project = REPO_ROOT / "flink" / "jobserver"
    done = paths.beam_services / MARKER
    digest = _sources_digest(project)
    if done.exists() and done.read_text().strip() == digest:
        return paths.beam_services
    if done.exists():
        _say("rebuilding the Beam services jar: flink/jobserver changed since it was built")
    else:
        _say(f"fetching Beam {BEAM_VERSION} Flink job server and expansion service jars from Maven Central "
             "(about 200 MB)")
    paths.beam_services.mkdir(parents=True, exist_ok=True)
    _run([_mvn(), "-B", "-q", "-f", str(project / "pom.xml"), "package"],
         paths.logs / "beam-mvn.log", "mvn package (Beam job server)")
    target = project / "target"
    jar = next(j for j in target.glob("sensorlake-beam-services-*.jar") if not j.stem.endswith("-job"))
    shutil.copy2(jar, paths.beam_services / "sensorlake-beam-services.jar")
    shutil.copy2(next(target.glob("sensorlake-beam-services-*-job.jar")), paths.beam_job_jar)
    lib = paths.beam_services / "lib"
    if lib.exists():
        shutil.rmtree(lib)
    shutil.copytree(target / "lib", lib)
    done.write_text(digest + "\n")
    return paths.beam_services


def install(settings: Settings) -> Paths:
    paths = Paths(Path(settings.cache).expanduser())
    paths.cache.mkdir(parents=True, exist_ok=True)
    ensure_mosquitto()
    ensure_kafka(paths)
    ensure_beam_services(paths)
    ensure_flink(paths)
    _say("everything is installed")
    return paths


if __name__ == "__main__":
    # `python -m sensorlake.local.install`: what `sensorlake local install` runs, without the rest of
    # the CLI (the image build runs it before the rest of the code is copied in).
    install(Settings.load())
