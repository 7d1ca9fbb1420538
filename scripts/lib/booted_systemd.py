"""A real systemd 252 (Debian 12) booted as PID 1 of its own namespaces, for the systemd tests.

No VM and no container engine: a minimal Debian 12 root file system (debootstrap, cached between
runs), mounted as an overlay so that every boot starts from the pristine tree, booted with
`unshare --pid --fork --mount --uts --ipc`, proc/sys/dev/run mounted, `pivot_root` into it and
`exec /lib/systemd/systemd` with `container=other`. Commands run inside with `nsenter`; files are
reached from outside through /proc/PID/root. Everything the boot mounted lives in the boot's own
mount namespace, so killing its PID 1 removes all of it: nothing leaks on the host whatever happens.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

SUITE = "bookworm"
# What the root file system holds besides minbase: systemd as init, dbus for systemctl, and the
# Python the tests' clients are written in. Nothing of sinkd's own dependencies beyond what
# systemd brings: apt-get installs those from the package's Depends, as on any fresh machine.
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3"]
MIRROR = os.environ.get("SINKD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEFAULT_CACHE = os.environ.get("SINKD_ROOTFS_CACHE", "/var/cache/sinkd-test")


class BootError(RuntimeError):
    pass


def as_user(user, argv):
    """argv run as `user`, with its primary group and its supplementary groups (setpriv; no PAM)."""
    return ["sh", "-c", 'exec setpriv --reuid "$0" --regid "$(id -g "$0")" --init-groups -- "$@"', user] + list(argv)


def cached_rootfs(cache_dir=DEFAULT_CACHE, log=print):
    """The pristine root file system, made once by debootstrap (about 90 s) and kept in cache_dir.

    A tree whose debootstrap did not finish has no marker file and is made again.
    """
    key = f"{SUITE}-minbase-" + "-".join(PACKAGES)
    root = os.path.join(cache_dir, key)
    marker = root + ".complete"
    if os.path.exists(marker):
        return root
    if shutil.which("debootstrap") is None:
        raise BootError("debootstrap is not installed (apt-get install debootstrap)")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(cache_dir, exist_ok=True)
    log(f"debootstrap {SUITE} into {root} (once; cached for later runs)")
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, root, MIRROR],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise BootError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    # A machine id, so that journald keeps a persistent-looking journal and units see one.
    subprocess.run(["systemd-machine-id-setup", "--root", root], check=False, capture_output=True)
    open(marker, "w").close()
    return root


class BootedSystemd:
    """One boot. Use as a context manager: the boot is torn down on exit, whatever happened."""

    def __init__(self, lower, log=print):
        self.lower = lower
        self.log = log
        self.work = tempfile.mkdtemp(prefix="sinkd-systemd-")
        self.unshare = None
        self.pid = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self):
        try:
            self.boot()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False

    def boot(self, timeout=60):
        upper, workdir, merged = (os.path.join(self.work, d) for d in ("upper", "overlay-work", "root"))
        for d in (upper, workdir, merged):
            os.makedirs(d)
        script = f"""
set -e
mount -t overlay overlay -o lowerdir={self.lower},upperdir={upper},workdir={workdir} {merged}
mount -t proc proc {merged}/proc
mount -t sysfs sysfs {merged}/sys
mount --rbind /dev {merged}/dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs {merged}/run
mkdir -p {merged}/oldroot
cd {merged}
pivot_root . oldroot
umount -l /oldroot
rmdir /oldroot
exec env -i container=other TERM=dumb /lib/systemd/systemd --log-target=journal-or-kmsg
"""
        self.console = open(os.path.join(self.work, "console.log"), "wb")
        self.unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        # PID 1 of the new namespace is unshare's child, once it has exec'd systemd.
        while time.monotonic() < deadline:
            if self.unshare.poll() is not None:
                raise BootError(f"the boot ended at once ({self.unshare.returncode}): {self.console_text()}")
            child = self._child_of(self.unshare.pid)
            if child and self._comm(child) == "systemd":
                self.pid = child
                break
            time.sleep(0.05)
        else:
            raise BootError(f"systemd did not start in {timeout} s: {self.console_text()}")
        while time.monotonic() < deadline:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
                    self.log(f"booted systemd is degraded (before sinkd): {failed.strip()}")
                return
            time.sleep(0.2)
        raise BootError(f"systemd did not reach 'running' in {timeout} s: {state}")

    def shutdown(self):
        """Kills the boot's PID 1 (the kernel then kills every process of its PID namespace, and
        the mount namespace with every mount goes with the last of them) and removes the overlay."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.unshare:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.unshare.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.unshare.wait(timeout=30)
        self.pid = None
        with contextlib.suppress(Exception):
            self.console.close()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- inside ----------------------------------------------------------------------------

    def run(self, argv, user=None, check=True, timeout=120, input=None):
        """Runs argv inside the boot (as root, or as `user` with that user's groups) and returns
        the CompletedProcess (text). check=True raises with the output on a non-zero exit."""
        if self.pid is None:
            raise BootError("not booted")
        prefix = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-r", "-w"]
        if user:
            argv = as_user(user, argv)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        result = subprocess.run(prefix + ["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + list(argv),
                                capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def popen(self, argv, user=None, **kwargs):
        """Starts argv inside the boot without waiting (pipes are the caller's choice)."""
        prefix = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-r", "-w"]
        if user:
            argv = as_user(user, argv)
        return subprocess.Popen(prefix + ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"] + list(argv), **kwargs)

    def path(self, inside):
        """The host path of a path inside the boot (through /proc/PID/root)."""
        return f"/proc/{self.pid}/root" + inside

    def copy_in(self, host_path, inside, mode=0o644):
        shutil.copyfile(host_path, self.path(inside))
        os.chmod(self.path(inside), mode)

    def write(self, inside, text, mode=0o644):
        with open(self.path(inside), "w") as f:
            f.write(text)
        os.chmod(self.path(inside), mode)

    def read(self, inside):
        with open(self.path(inside)) as f:
            return f.read()

    def journal(self, *args):
        return self.run(["journalctl", "--no-pager", "-o", "cat"] + list(args), check=False).stdout

    def show(self, unit, prop):
        return self.run(["systemctl", "show", "-P", prop, unit], check=False).stdout.strip()

    def console_text(self):
        with contextlib.suppress(Exception):
            with open(os.path.join(self.work, "console.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        return ""

    @staticmethod
    def _child_of(pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
                return int(children[0]) if children else None
        return None

    @staticmethod
    def _comm(pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()
        return None
