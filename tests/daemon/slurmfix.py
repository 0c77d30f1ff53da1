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


def slurm_jobs(name_prefix="radlads-pool-"):
    """{slurm job id: state} of the queue's radlads pools (pending, running or completing)."""
    r = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        jid, name, state = line.split()
        if name.startswith(name_prefix):
            out[jid] = state
    return out


def slurm_state(jid):
    r = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(jid), "-o", "%T"], capture_output=True, text=True)
    return r.stdout.strip()
