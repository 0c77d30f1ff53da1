"""Text for tests: the real corpora in ../shared/corpora (RADLADS_CORPORA, set by tests/meson.build), or,
where a checkout has none next to it, deterministic generated English-like text (with a note)."""
import os
import random

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were their one all we can her has there been if more when will would who so no thou thee king "
         "lord love night day heart death man good time speak come go know make see").split()


def english_text(nbytes, name="tinyshakespeare.txt"):
    corpora = os.environ.get("RADLADS_CORPORA", "")
    path = os.path.join(corpora, name) if corpora else ""
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return f.read(nbytes)
    print(f"note: no {name} in RADLADS_CORPORA ({corpora or 'unset'}); using generated text")
    rnd = random.Random(1234)
    out, size = [], 0
    while size < nbytes:
        line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12))).capitalize() + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:nbytes]
