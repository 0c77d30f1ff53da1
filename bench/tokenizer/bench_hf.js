// HF reference for bench_encode: prints "MBPS <file> <MB/s>" per file, the median of RUNS encodes
// of the whole file on one thread.   node bench_hf.js TOKENIZER_JSON RUNS FILE...
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, '../../tests/tokenizer/node_modules/@anush008/tokenizers'));
const [tokPath, runs, ...files] = process.argv.slice(2);
const tk = Tokenizer.fromFile(tokPath);
(async () => {
  for (const f of files) {
    const text = fs.readFileSync(f, 'utf8');
    const bytes = Buffer.byteLength(text);
    await tk.encode(text, null, { addSpecialTokens: false }); // warm-up
    const t = [];
    for (let i = 0; i < Number(runs); i++) {
      const t0 = process.hrtime.bigint();
      await tk.encode(text, null, { addSpecialTokens: false });
      t.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    t.sort((a, b) => a - b);
    console.log(`MBPS ${f} ${(bytes / 1e6 / t[Math.floor(t.length / 2)]).toFixed(3)}`);
  }
})();
