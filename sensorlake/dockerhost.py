"""What `docker compose up -d` needs on a Debian machine without Docker Hub, made from the registries.

- the engine: Debian's ``docker.io`` (dockerd, containerd, runc) and ``debootstrap``, with apt;
- ``dockerd`` started by hand when none answers (no systemd here), and stopped by its pid;
- Compose v2, which Debian does not package: built from the Go module proxy
  (``go mod download github.com/docker/compose/v2@COMPOSE_VERSION``, then ``go build ./cmd``) into
  ``<cache>/docker-compose-<version>/cli-plugins/docker-compose``, once; ``docker compose`` finds it
  with ``DOCKER_CONFIG=<cache>/docker-compose-<version>`` (see :func:`compose_env`);
- the base image (``debian:bookworm-slim`` unless told otherwise): pulled when a registry serves
  it, else made with ``debootstrap --variant=minbase bookworm`` from this machine's Debian mirror
  and ``docker import``; the root file system is kept as a tarball in the cache, so a wiped engine
  gets it back in seconds.

The compose end-to-end test (tests/compose/) calls these; by hand:
``python -m sensorlake.dockerhost prepare`` (root), then ``docker compose up -d``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

COMPOSE_VERSION = "2.40.3"
COMPOSE_MODULE = "github.com/docker/compose/v2"
BASE_IMAGE = "debian:bookworm-slim"
APT_PACKAGES = ("docker.io", "debootstrap")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DOCKERD_PID_FILE = Path("/var/run/docker.pid")


class DockerHostError(RuntimeError):
    """A step failed; the message says which and why (a log tail where there is one)."""


def _say(msg: str) -> None:
    print(f"[docker] {msg}", flush=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run(cmd: list[str], log: Path, what: str, env: dict | None = None, cwd: Path | None = None,
         timeout: float | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DockerHostError(f"{what} took more than {timeout:.0f}s; log: {log}\n{_tail(log)}") from exc
    if proc.returncode != 0:
        raise DockerHostError(f"{what} failed (exit {proc.returncode}); log: {log}\n{_tail(log)}")


# ====================================================================== packages
def ensure_packages(packages=APT_PACKAGES) -> None:
    """apt-get install what is missing (dockerd, debootstrap); needs root. The local stack's apt
    path (waits while another apt holds the lock)."""
    from sensorlake.local.install import InstallError, apt_install

    missing = [p for p in packages if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                     text=True).stdout.strip() != "install ok installed"]
    if not missing:
        return
    try:
        apt_install(missing, "docker compose (the Docker engine, and debootstrap for the base image)")
    except InstallError as exc:
        raise DockerHostError(str(exc)) from exc


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        raise DockerHostError("no docker client on PATH (Debian's docker.io brings one)")
    return found


# ====================================================================== dockerd
def engine_answers(timeout: float = 10.0) -> bool:
    try:
        return subprocess.run([docker_cli(), "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              timeout=timeout).returncode == 0
    except (subprocess.TimeoutExpired, DockerHostError):
        return False


@dataclass
class Dockerd:
    """A dockerd this process started (pid) or found running (pid None); stop() ends only ours."""

    pid: int | None
    log: Path | None = None

    def stop(self, timeout: float = 60.0) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not our child (started by another process): poll its pid
                done = self.pid if not Path(f"/proc/{self.pid}").exists() else 0
            if done:
                break
            time.sleep(0.3)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None


def ensure_dockerd(log_dir: Path, wait_s: float = 60.0, dockerd: str | None = None) -> Dockerd:
    """Uses the engine that answers; otherwise starts dockerd (root) and waits for it.

    Raises DockerHostError with the reason (and dockerd's log) when no engine can be had: a machine
    where Docker cannot run fails the compose test, it does not skip it.
    """
    if engine_answers():
        return Dockerd(pid=None)
    dockerd = dockerd or shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if not dockerd:
        raise DockerHostError("no Docker engine answers and dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise DockerHostError("no Docker engine answers, and starting dockerd needs root")
    if DOCKERD_PID_FILE.exists():
        # A dockerd that does not answer still holds its pid file: starting a second one would fail.
        pid = DOCKERD_PID_FILE.read_text().strip()
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            raise DockerHostError(f"a dockerd (pid {pid}) runs but does not answer on /var/run/docker.sock")
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "dockerd.log"
    _say(f"starting dockerd (log: {log})")
    with open(log, "ab") as fh:
        proc = subprocess.Popen([dockerd], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    started = Dockerd(pid=proc.pid, log=log)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DockerHostError(f"dockerd exited ({proc.returncode}) during start-up; log: {log}\n{_tail(log)}")
        if engine_answers(timeout=5):
            return started
        time.sleep(0.5)
    started.stop()
    raise DockerHostError(f"dockerd did not answer within {wait_s:.0f}s; log: {log}\n{_tail(log)}")


# ====================================================================== compose v2
def compose_dir(cache: Path) -> Path:
    """DOCKER_CONFIG for `docker compose`: holds cli-plugins/docker-compose."""
    return cache / f"docker-compose-{COMPOSE_VERSION}"


def compose_env(cache: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(compose_dir(cache))}


def ensure_compose(cache: Path) -> Path:
    """Builds Compose v2 from the Go module proxy once (about 2-5 minutes on 2 cores)."""
    target = compose_dir(cache) / "cli-plugins" / "docker-compose"
    marker = compose_dir(cache) / ".complete"
    if marker.exists() and target.exists():
        return target
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise DockerHostError("Compose v2 is built from the Go module proxy, and no `go` is installed")
    logs = cache / "install-logs"
    _say(f"building Compose v{COMPOSE_VERSION} from the Go module proxy (a few minutes, once)")
    dl = subprocess.run([go, "mod", "download", "-json", f"{COMPOSE_MODULE}@v{COMPOSE_VERSION}"],
                        capture_output=True, text=True)
    if dl.returncode != 0:
        raise DockerHostError(f"go mod download {COMPOSE_MODULE}@v{COMPOSE_VERSION} failed:\n{dl.stdout}{dl.stderr}")
    src_dir = Path(json.loads(dl.stdout)["Dir"])
    with tempfile.TemporaryDirectory(prefix="sensorlake-compose-") as tmp:
        src = Path(tmp) / "compose"
        shutil.copytree(src_dir, src)  # the module cache is read-only; `go build` wants to write
        for p in [src, *src.rglob("*")]:
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)
        target.parent.mkdir(parents=True, exist_ok=True)
        _run([go, "build", "-trimpath", "-ldflags",
              f"-s -w -X github.com/docker/compose/v2/internal.Version=v{COMPOSE_VERSION}",
              "-o", str(target), "./cmd"], logs / "compose-go-build.log", "go build (Compose v2)",
             env={**os.environ, "CGO_ENABLED": "0"}, cwd=src)
    marker.touch()
    return target


# ====================================================================== the base image
def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """This machine's Debian mirror (apt's sources), for debootstrap."""
    candidates = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list")),
                  *sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822: URIs: ... / Suites: bookworm ...
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and "bookworm" in suites.group(1).split():
                    return uris.group(1).rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line + " ")
                if m:
                    return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def image_present(name: str) -> bool:
    return subprocess.run([docker_cli(), "image", "inspect", name], capture_output=True).returncode == 0


def ensure_base_image(cache: Path, name: str = BASE_IMAGE, pull_timeout: float = 60.0) -> str:
    """The image our Dockerfile builds FROM: present, pulled, or made here. Returns how."""
    if image_present(name):
        return "present"
    logs = cache / "install-logs"
    try:
        _run([docker_cli(), "pull", name], logs / "base-image-pull.log", f"docker pull {name}", timeout=pull_timeout)
        return "pulled"
    except DockerHostError as exc:
        _say(f"cannot pull {name} ({str(exc).splitlines()[0]}); making it with debootstrap")
    tarball = cache / "base-images" / "debian-bookworm-minbase.tar"
    if not tarball.exists():
        if os.geteuid() != 0:
            raise DockerHostError("debootstrap needs root")
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).exists():
            raise DockerHostError("debootstrap is not installed (apt-get install debootstrap)")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sensorlake-rootfs-") as tmp:
            root = Path(tmp) / "rootfs"
            mirror = debian_mirror()
            _say(f"debootstrap --variant=minbase bookworm from {mirror}")
            _run([debootstrap, "--variant=minbase", "bookworm", str(root), mirror], logs / "debootstrap.log",
                 "debootstrap bookworm")
            # As slim as the official image: no apt lists or caches in the layer.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for p in (root / junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            partial = tarball.with_suffix(".partial")
            _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], logs / "rootfs-tar.log",
                 "tar of the root file system")
            partial.rename(tarball)
    _run([docker_cli(), "import", "--change", 'CMD ["bash"]', str(tarball), name], logs / "base-image-import.log",
         f"docker import {name}")
    return "made with debootstrap"


# ====================================================================== by hand
def prepare(cache: Path, base_image: str = BASE_IMAGE) -> Dockerd:
    ensure_packages()
    compose = ensure_compose(cache)
    engine = ensure_dockerd(cache / "install-logs")
    how = ensure_base_image(cache, base_image)
    _say(f"engine ready{'' if engine.pid is None else f' (dockerd pid {engine.pid}, started here)'}; "
         f"base image {base_image}: {how}; compose: {compose}")
    return engine


def main(argv: list[str] | None = None) -> int:
    from sensorlake.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m sensorlake.dockerhost", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["prepare"], help="install the engine, build compose, make the base image")
    parser.add_argument("--base-image", default=BASE_IMAGE)
    args = parser.parse_args(argv)
    cache = Path(Settings.load().cache).expanduser()
    try:
        prepare(cache, args.base_image)
    except DockerHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"`docker compose` with: export DOCKER_CONFIG={compose_dir(cache)}  "
          f"(or copy {compose_dir(cache) / 'cli-plugins' / 'docker-compose'} to ~/.docker/cli-plugins/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
