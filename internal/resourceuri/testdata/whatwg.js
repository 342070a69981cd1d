// whatwg.js is the oracle of the differential tests in package resourceuri: it reads one JSON
// string a line on stdin and writes, a line each in the same order, {"ok":true,"href":...}
// with new URL(s).toString() (WHATWG URL parsing, no base URL) or {"ok":false} where that
// throws. A line that is not a JSON string gives {"ok":false,"bad":true}.
'use strict';
const readline = require('readline');
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
let pending = false;
function flush() {
  pending = false;
  if (out.length) process.stdout.write(out.splice(0).join(''));
}
rl.on('line', (line) => {
  let res;
  let s;
  try {
    s = JSON.parse(line);
  } catch (e) {
    s = undefined;
  }
  if (typeof s !== 'string') {
    res = { ok: false, bad: true };
  } else {
    try {
      res = { ok: true, href: new URL(s).toString() };
    } catch (e) {
      res = { ok: false };
    }
  }
  out.push(JSON.stringify(res) + '\n');
  if (!pending) {
    pending = true;
    setImmediate(flush);
  }
});
rl.on('close', flush);
