#!/usr/bin/env python3
"""Embed files into a C translation unit: embed.py OUT.c OUT.h SYMBOL FILE...

Produces `const struct rl_embedded_file SYMBOL[]` (name = basename, data NUL-terminated, size excludes
the NUL) and `const size_t SYMBOL_count`, in the order the files are given.  Used for SQL migrations and
the dashboard's static files, so the binaries need nothing from the source tree at run time."""
import os
import sys


def main():
    out_c, out_h, symbol, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    guard = "RL_EMBED_" + symbol.upper() + "_H"
    with open(out_h, "w") as h:
        h.write(f"#ifndef {guard}\n#define {guard}\n#include <stddef.h>\n")
        h.write("#ifndef RL_EMBEDDED_FILE_DEFINED\n#define RL_EMBEDDED_FILE_DEFINED\n")
        h.write("struct rl_embedded_file {\n    const char *name;\n    const unsigned char *data;\n"
                "    size_t size;\n};\n#endif\n")
        h.write(f"extern const struct rl_embedded_file {symbol}[];\nextern const size_t {symbol}_count;\n")
        h.write("#endif\n")
    with open(out_c, "w") as c:
        c.write(f'#include "{os.path.basename(out_h)}"\n')
        for i, path in enumerate(files):
            data = open(path, "rb").read() + b"\0"
            c.write(f"static const unsigned char {symbol}_{i}[{len(data)}] = {{\n")
            for off in range(0, len(data), 20):
                c.write("    " + ",".join(str(b) for b in data[off:off + 20]) + ",\n")
            c.write("};\n")
        c.write(f"const struct rl_embedded_file {symbol}[] = {{\n")
        for i, path in enumerate(files):
            size = os.path.getsize(path)
            c.write(f'    {{"{os.path.basename(path)}", {symbol}_{i}, {size}}},\n')
        c.write("    {0, 0, 0}\n};\n")
        c.write(f"const size_t {symbol}_count = {len(files)};\n")


if __name__ == "__main__":
    main()
