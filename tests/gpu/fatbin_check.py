#!/usr/bin/env python3
"""fatbin_check.py — which GPU code each CUDA object of the build carries, checked against what the backend needs:
sm_80 and sm_90 machine code (Ampere runs the first, sm_86/sm_89 too; Hopper the second) and compute_90 PTX, which
the driver compiles for GPUs newer than the build (Blackwell) at their first launch.

    fatbin_check.py [--codes-header H] OBJECT...   exit 0 when every object carries all three, else 1 with what is
                                                   missing; with H (the build's rlc_cuda_arch.h) the images needed
                                                   are H's (RLC_SM_CODES, RLC_PTX_CODE), and an object whose machine
                                                   code is not exactly RLC_SM_CODES (the list the backend's start-up
                                                   message goes by: -gencode flags from elsewhere) fails too

There is no cuobjdump here (ENVIRONMENT.md), so the objects' .nv_fatbin section is read directly: one or more fat
binary containers (magic 0xBA55ED50, a 16-byte header with the size of what follows), each a list of images, each
with its own header: kind (1 PTX, 2 ELF), header size, payload size, and the target architecture (sm × 10 + minor,
e.g. 90). The section is extracted with objcopy (binutils). Images are counted, not decoded, so compressed PTX
counts too."""
import os
import struct
import subprocess
import sys
import tempfile

MAGIC = 0xBA55ED50
KIND = {1: "PTX", 2: "ELF"}
NEEDED = {("ELF", 80), ("ELF", 90), ("PTX", 90)}


def fatbin_section(path):
    """the raw bytes of the object's .nv_fatbin section (b'' when it has none)"""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "fatbin")
        r = subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", path, out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"fatbin_check: objcopy failed on {path}: {r.stderr.strip()}")
        return open(out, "rb").read() if os.path.exists(out) else b""


def images(blob, path):
    """(kind, arch) of every image in every container of the section"""
    found, off = [], 0
    while off + 16 <= len(blob):
        magic, _version, hsize, fsize = struct.unpack_from("<IHHQ", blob, off)
        if magic != MAGIC:
            if not any(blob[off:off + 16]):  # padding between containers
                off += 8
                continue
            raise SystemExit(f"fatbin_check: {path}: no fat binary container at byte {off} of .nv_fatbin "
                             f"(magic {magic:#x}); the format has changed, or this is not an nvcc object")
        if hsize < 16:
            raise SystemExit(f"fatbin_check: {path}: container at byte {off} has a {hsize}-byte header (at least 16)")
        p, end = off + hsize, off + hsize + fsize
        if end > len(blob):
            raise SystemExit(f"fatbin_check: {path}: a container claims {fsize} bytes past byte {off + hsize}, "
                             f"but the section has {len(blob)}")
        while p + 32 <= end:
            kind, _flags, ih, size = struct.unpack_from("<HHIQ", blob, p)
            if ih < 32 or p + ih + size > end:
                raise SystemExit(f"fatbin_check: {path}: image header at byte {p} is malformed "
                                 f"(header {ih} bytes, payload {size})")
            arch = struct.unpack_from("<I", blob, p + 28)[0]
            found.append((KIND.get(kind, f"kind {kind}"), arch))
            p += ih + size
        off = end
    return found


def header_needs(path):
    """(machine-code archs, the images needed) from the generated header's `#define RLC_SM_CODES 80, 90` and
    `#define RLC_PTX_CODE 90`"""
    defs = {}
    with open(path) as f:
        for line in f:
            w = line.split(None, 2)
            if len(w) == 3 and w[0] == "#define":
                defs[w[1]] = w[2].strip()
    try:
        codes = {int(c) for c in defs["RLC_SM_CODES"].split(",")}
        ptx = int(defs["RLC_PTX_CODE"])
    except (KeyError, ValueError):
        raise SystemExit(f"fatbin_check: {path} lacks '#define RLC_SM_CODES <n>, <n>...' or '#define RLC_PTX_CODE <n>'")
    return codes, {("ELF", c) for c in codes} | {("PTX", ptx)}


def main(argv):
    told, needed = None, NEEDED
    if argv[:1] == ["--codes-header"]:
        if len(argv) < 3:
            print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
            return 2
        told, needed = header_needs(argv[1])
        argv = argv[2:]
    if not argv:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    bad = 0
    for path in argv:
        have = set(images(fatbin_section(path), path))
        missing = sorted(needed - have)
        name = os.path.basename(path)
        listed = ", ".join(f"{k} {'sm' if k == 'ELF' else 'compute'}_{a}" for k, a in sorted(have)) or "no GPU code"
        elf = {a for k, a in have if k == "ELF"}
        if missing:
            bad += 1
            need = ", ".join(f"{k} {'sm' if k == 'ELF' else 'compute'}_{a}" for k, a in missing)
            print(f"{name}: carries {listed}; MISSING {need} (meson.build cuda_sm_codes, cuda_ptx_code)")
        elif told is not None and elf != told:
            bad += 1
            print(f"{name}: carries machine code for {sorted(elf)}, but the backend is told {sorted(told)} "
                  f"(RLC_SM_CODES): rebuild, or pass -gencode flags only through meson.build's cuda_sm_codes")
        else:
            print(f"{name}: {listed}  ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
