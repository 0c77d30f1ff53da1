#!/usr/bin/env python3
"""emu_launch.py IN.cu OUT.cc — the .cu with every kernel launch `k<<<grid, block[, smem[, stream]]>>>(args)`
rewritten as `emu::launch(k, grid, block[, smem[, stream]])(args)` (tests/gpu/cuda_emu.h), so that a
*_cuda_logic_check can run the launchers' host code on the host. Nothing else changes; a #line keeps
diagnostics pointing at the .cu."""
import re
import sys

LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    out, n = LAUNCH.subn(lambda m: "emu::launch(%s, %s)(" % (m.group(1), m.group(2)), text)
    if n == 0 or "<<<" in out:
        sys.exit("emu_launch.py: %s: %d launches rewritten, %d left" % (src, n, out.count("<<<")))
    with open(dst, "w", encoding="utf-8") as f:
        f.write('#line 1 "%s"\n' % src)
        f.write(out)


main()
