"""token_files_agree.py PREFIX_TOK.tok PREFIX_BINIDX: reads a radlads .tok file by the layout in
model/tokenizer/tokenizer.h and a binidx pair the way Megatron-LM's MMapIndexedDataset does (numpy,
independently of the C reader), and checks both hold the same documents."""
import struct
import sys

import numpy as np

DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}


def read_tok(path):
    raw = open(path, "rb").read()
    magic, version, width, n_tokens, n_docs, vocab, eos, fp = struct.unpack_from("<8sIIQQIIQ", raw)
    assert magic == b"RLTOKENS" and version == 1 and width in (2, 4), (magic, version, width)
    assert len(raw) == 64 + n_tokens * width + (n_docs + 1) * 8, "size"
    ids = np.frombuffer(raw, dtype=np.uint16 if width == 2 else np.uint32, count=n_tokens, offset=64)
    off = np.frombuffer(raw, dtype="<u8", count=n_docs + 1, offset=64 + n_tokens * width)
    return [ids[off[i]:off[i + 1]] for i in range(n_docs)], vocab


def read_binidx(prefix):
    idx = open(prefix + ".idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00", "magic"
    version, = struct.unpack_from("<Q", idx, 9)
    code, = struct.unpack_from("<B", idx, 17)
    n_seq, n_doc = struct.unpack_from("<QQ", idx, 18)
    assert version == 1
    dtype = DTYPES[code]
    sizes = np.frombuffer(idx, dtype=np.int32, count=n_seq, offset=34)
    pointers = np.frombuffer(idx, dtype=np.int64, count=n_seq, offset=34 + sizes.nbytes)
    doc_idx = np.frombuffer(idx, dtype=np.int64, count=n_doc, offset=34 + sizes.nbytes + pointers.nbytes)
    data = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
    item = np.dtype(dtype).itemsize
    seqs = [np.asarray(data[p // item:p // item + s]) for p, s in zip(pointers, sizes)]
    assert list(doc_idx) == list(range(n_seq + 1)), "one sequence per document"
    return seqs, dtype


tok_docs, vocab = read_tok(sys.argv[1])
bi_docs, dtype = read_binidx(sys.argv[2])
assert dtype == (np.uint16 if vocab <= 65536 else np.int32), dtype
assert len(tok_docs) == len(bi_docs), (len(tok_docs), len(bi_docs))
for i, (a, b) in enumerate(zip(tok_docs, bi_docs)):
    assert np.array_equal(a.astype(np.int64), b.astype(np.int64)), f"document {i} differs"
print(f"token_files_agree: {len(tok_docs)} documents, {sum(map(len, tok_docs))} tokens, "
      f"binidx dtype {np.dtype(dtype).name}: same")
