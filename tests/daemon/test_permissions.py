"""Users act only on their own jobs (identity from SO_PEERCRED); root acts on all; socket modes."""
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, fixture, run  # noqa: E402


def test_socket_is_owner_only_by_default(root):
    fixture(root)
    d = Daemon(root).start()
    try:
        mode = stat.S_IMODE(os.stat(d.sock).st_mode)
        assert mode == 0o600, oct(mode)
        r = d.cli("status", user="nobody", check=False)
        assert r.returncode == 1 and "permission denied" in r.stderr, r.stderr
    finally:
        d.stop()


def test_other_uid_cannot_touch_my_jobs(root):
    spec = fixture(root)
    os.chmod(os.path.join(root, "out"), 0o777)
    d = Daemon(root, "--group", "nogroup").start()
    try:
        os.chmod(d.state, 0o755)
        st = os.stat(d.sock)
        assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
        assert st.st_gid == 65534, st.st_gid
        mine = int(d.cli("submit", spec, "--print-id").stdout)
        # nobody (primary group nogroup) can connect, list, and submit a job of its own ...
        r = d.cli("submit", spec, "--name", "nobodys", "--output", os.path.join(root, "out", "nb"), "--print-id",
                  user="nobody")
        theirs = int(r.stdout)
        jobs = {j["id"]: j for j in d.json("status", user="nobody")["jobs"]}
        assert jobs[theirs]["owner"] == "nobody" and jobs[mine]["owner"] == "root"
        assert [j["id"] for j in d.json("status", "--mine", user="nobody")["jobs"]] == [theirs]
        # ... but cannot cancel, hold or restart root's job.
        for verb in ("cancel", "hold"):
            r = d.cli(verb, mine, user="nobody", check=False)
            assert r.returncode == 1 and "belongs to root" in r.stderr, r.stderr
        assert d.json("show", mine)["state"] == "QUEUED"
        # It can act on its own job; root can act on anyone's.
        d.cli("hold", theirs, user="nobody")
        d.cli("cancel", theirs)
        assert d.json("show", theirs)["state"] == "CANCELLED"
    finally:
        d.stop()


if __name__ == "__main__":
    run([test_socket_is_owner_only_by_default, test_other_uid_cannot_touch_my_jobs])
