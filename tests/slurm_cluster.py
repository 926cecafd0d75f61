"""A real single-node Slurm for tests, started and stopped by a fixture: munged, MariaDB + slurmdbd (submitit asks
``sacct`` for job states, so accounting must work), slurmctld and slurmd, every file and port private to a
temporary folder. Debian's packages: slurm-wlm, munge, slurmdbd, mariadb-server (``.ci/run`` installs them).
Needs root. When Slurm cannot be started the fixture FAILS with what went wrong: the Slurm tests never skip
silently."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = "slurm-wlm munge slurmdbd mariadb-server"
BINARIES = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "mariadb-install-db", "sbatch", "sacct",
            "sacctmgr", "scancel", "sinfo")


class SlurmUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float = 60.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise SlurmUnavailable(f"{what} did not come up in {timeout:.0f} s. {tail}")


def _run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=env, timeout=60)


class SlurmCluster:
    """``start()`` brings the daemons up (``env`` then points every Slurm command at this cluster); ``stop()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.procs: list[subprocess.Popen] = []
        self.pidfiles: list[Path] = []

    def start(self) -> SlurmCluster:
        missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install {PACKAGES})")
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster runs its daemons as root")
        r = self.root
        for sub in ("state", "spool", "log", "munge", "db"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        cpus = os.cpu_count() or 1
        mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.8)
        munge_socket = r / "munge" / "munge.socket"
        ports = {name: _free_port() for name in ("ctld", "slurmd", "dbd", "db")}

        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon(["munged", "--force", f"--key-file={key}", f"--socket={munge_socket}",
                      f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                      f"--seed-file={r / 'munge' / 'munge.seed'}"], r / "munge" / "munged.pid")
        _wait("munged", munge_socket.exists, log=r / "log" / "munged.log")

        install = _run("mariadb-install-db", f"--datadir={r / 'db'}", "--user=root",
                       "--auth-root-authentication-method=normal")
        if install.returncode:
            raise SlurmUnavailable(f"mariadb-install-db failed: {install.stderr[-1000:]}")
        db_socket = r / "mysql.sock"
        self.procs.append(subprocess.Popen(
            ["mariadbd", f"--datadir={r / 'db'}", "--user=root", f"--socket={db_socket}", f"--port={ports['db']}",
             "--bind-address=127.0.0.1", f"--pid-file={r / 'mariadb.pid'}"],
            stdout=open(r / "log" / "mariadb.log", "w"), stderr=subprocess.STDOUT))  # noqa: SIM115  (the server's log)
        _wait("mariadbd", db_socket.exists, log=r / "log" / "mariadb.log")
        grant = _run("mariadb", "-uroot", f"--socket={db_socket}", "-e",
                     "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                     "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        if grant.returncode:
            raise SlurmUnavailable(f"cannot set up the accounting database: {grant.stderr[-1000:]}")

        (r / "slurmdbd.conf").write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdPort={ports['dbd']}
SlurmUser=root
LogFile={r / 'log' / 'slurmdbd.log'}
PidFile={r / 'slurmdbd.pid'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['db']}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
""")
        (r / "slurmdbd.conf").chmod(0o600)
        (r / "slurm.conf").write_text(f"""\
ClusterName=eatest
SlurmctldHost={host}
SlurmctldPort={ports['ctld']}
SlurmdPort={ports['slurmd']}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmdSpoolDir={r / 'spool'}
StateSaveLocation={r / 'state'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SlurmUser=root
SlurmdUser=root
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={ports['dbd']}
AccountingStoragePass={munge_socket}
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        self.env["SLURM_CONF"] = str(r / "slurm.conf")
        self._daemon(["slurmdbd"], r / "slurmdbd.pid")
        _wait("slurmdbd", lambda: _run("sacctmgr", "-n", "list", "cluster", env=self.env).returncode == 0,
              log=r / "log" / "slurmdbd.log")
        added = _run("sacctmgr", "-i", "add", "cluster", "eatest", env=self.env)
        if added.returncode and "already exists" not in added.stdout + added.stderr:
            raise SlurmUnavailable(f"sacctmgr add cluster failed: {added.stdout} {added.stderr}")
        self._daemon(["slurmctld", "-f", str(r / "slurm.conf")], r / "slurmctld.pid")
        self._daemon(["slurmd", "-f", str(r / "slurm.conf")], r / "slurmd.pid")
        _wait("an idle Slurm node", lambda: "idle" in _run("sinfo", "-h", "-o", "%t", env=self.env).stdout,
              log=r / "log" / "slurmctld.log")
        return self

    def _daemon(self, cmd: list[str], pidfile: Path) -> None:
        started = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60)
        if started.returncode:
            raise SlurmUnavailable(f"{cmd[0]} failed to start: {started.stdout} {started.stderr}")
        self.pidfiles.append(pidfile)

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=self.env, timeout=30)
        for pidfile in reversed(self.pidfiles):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), 15)
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(1)
