"""A one-node Slurm on this machine for the Slurm launcher's tests (scripts/slurm-local.sh starts it)."""
import os
import subprocess

SRC = os.environ.get("RADLADS_SRC", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def ensure_slurm():
    """Starts (or confirms) the local cluster.  Returns None when it is up, else why it cannot be."""
    if os.geteuid() != 0:
        return "the local Slurm cluster needs root (scripts/slurm-local.sh)"
    r = subprocess.run([os.path.join(SRC, "scripts", "slurm-local.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        return "scripts/slurm-local.sh failed: " + (r.stderr or r.stdout).strip()
    return None


def slurm_jobs(state_dir):
    """{slurm job id: state} of the radlads pools in the queue (pending, running or completing) that the daemon
    with this state dir submitted (their batch script lives in STATE/pools)."""
    r = subprocess.run(["squeue", "-h", "-o", "%i %j %T %o"], capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        jid, name, state, command = line.split(None, 3)
        if name.startswith("radlads-pool-") and command.startswith(os.path.join(state_dir, "pools") + "/"):
            out[jid] = state
    return out


def cancel_leftovers(state_dir):
    """After a test: pools outlive their daemon by design (they re-attach to the next one); a test's must not."""
    for jid in slurm_jobs(state_dir):
        subprocess.run(["scancel", jid])


def slurm_state(jid):
    r = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(jid), "-o", "%T"], capture_output=True, text=True)
    return r.stdout.strip()
