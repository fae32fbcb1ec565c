#!/usr/bin/python3
"""Start-up time of gantry-exec vs bubblewrap (dev aid).

    /usr/bin/python3 native/test/exec_bench.py [-n 200] [--base /dev/shm] [--legacy]
    runuser -u gtest -- /usr/bin/python3 native/test/exec_bench.py

Runs /bin/true in a busybox rootfs N times per variant, the variants interleaved
in rounds of 10, each run spawned with posix_spawn and reaped with waitpid:
  - bwrap --unshare-user --bind ROOTFS / --proc /proc --dev /dev /bin/true
  - gantry-exec, the same sandbox: userns, mountns, bind ROOTFS /, proc, dev, pivot
  - gantry-exec, an image sandbox: 2-layer overlay with an upper dir, proc, dev, tmpfs /tmp, pivot
  - /bin/true alone (the cost of spawning anything)
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("-n", type=int, default=200)
ap.add_argument("--base", default="/dev/shm")
ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "Release", "gantry-exec"))
ap.add_argument("--legacy", action="store_true")
args = ap.parse_args()
BIN = os.path.abspath(args.bin)
env = dict(os.environ)
if args.legacy:
    env["GANTRY_EXEC_LEGACY"] = "1"
BWRAP = shutil.which("bwrap")

base = tempfile.mkdtemp(prefix="gx-bench-", dir=args.base)
os.chmod(base, 0o755)
flat, l1, l2 = (os.path.join(base, x) for x in ("flat", "l1", "l2"))
for root in (flat, l1):
    for d in ("bin", "etc", "proc", "dev", "tmp"):
        os.makedirs(os.path.join(root, d))
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    os.symlink("busybox", os.path.join(root, "bin", "true"))
    os.symlink("busybox", os.path.join(root, "bin", "sh"))
os.makedirs(os.path.join(l2, "etc"))
with open(os.path.join(l2, "etc", "os-release"), "w") as f:
    f.write("ID=gantry-test\n")
for d in ("upper", "work", "merged"):
    os.makedirs(os.path.join(base, d))


def plan(name, ops):
    path = os.path.join(base, name)
    with open(path, "w") as f:
        f.write("gantry-plan 1\n" + "".join(" ".join(op) + "\n" for op in ops))
    return path


uid = "0"
bind_plan = plan("bind.plan", [["userns", uid, uid], ["mountns"], ["rootfs", flat], ["bind", flat, "/", '""'],
                               ["proc", "/proc"], ["dev", "/dev"], ["pivot"], ["env", "PATH", "/bin"],
                               ["argv", "/bin/true"], ["exec"]])
m = os.path.join(base, "merged")
ovl_plan = plan("overlay.plan", [["userns", uid, uid], ["mountns"],
                                 ["overlay", m, os.path.join(base, "upper"), os.path.join(base, "work"), l2, l1],
                                 ["rootfs", m], ["proc", "/proc"], ["dev", "/dev"], ["tmpfs-in", "/tmp", "mode=1777"],
                                 ["pivot"], ["env", "PATH", "/bin"], ["argv", "/bin/true"], ["exec"]])

variants = {
    "gantry-exec (bind rootfs, like bwrap)": [BIN, bind_plan],
    "gantry-exec (2-layer overlay + upper)": [BIN, ovl_plan],
    "/bin/true alone": ["/bin/true"],
}
if BWRAP:
    variants = dict([("bwrap --unshare-user --bind ROOTFS / --proc /proc --dev /dev",
                      [BWRAP, "--unshare-user", "--bind", flat, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true"])]
                    + list(variants.items()))
else:
    print("bwrap not found (apt-get install -y bubblewrap): skipping it")

for name, argv in variants.items():  # sanity check and warm-up
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit("%s failed: %s" % (name, r.stderr))

times = {k: [] for k in variants}
devnull = os.open("/dev/null", os.O_RDWR)
fa = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
envl = env
for _ in range(0, args.n, 10):
    for name, argv in variants.items():
        for _ in range(10):
            t0 = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, envl, file_actions=fa)
            _, st = os.waitpid(pid, 0)
            times[name].append(time.perf_counter() - t0)
            if st != 0:
                raise SystemExit("%s: status %d" % (name, st))

print("uid %d, %d runs each%s:" % (os.getuid(), len(next(iter(times.values()))), ", legacy" if args.legacy else ""))
for name, t in times.items():
    print("  %-62s mean %6.2f ms  median %6.2f ms" % (name, 1000 * statistics.mean(t), 1000 * statistics.median(t)))
subprocess.run(["rm", "-rf", base])
