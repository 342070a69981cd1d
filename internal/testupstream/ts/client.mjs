// A test client: the official MCP TypeScript SDK's Client over StreamableHTTPClientTransport, as
// its README writes it, for tests of what a TypeScript agent sees of the proxy's answers.
//
//   node client.mjs URL USER TOOL N
//
// It connects to URL with the header X-User: USER, calls TOOL N times with {text: "q"} and
// prints one JSON line per call on stdout: {"result": {isError, text, meta}} or
// {"error": {name, code, message, data}} — what the SDK hands its caller.
import { webcrypto } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

if (!globalThis.crypto) {
    globalThis.crypto = webcrypto; // Node 18, as in server.mjs
}

const [url, user, tool, n] = process.argv.slice(2);
const out = o => process.stdout.write(JSON.stringify(o) + '\n');

const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { 'X-User': user } } });
const client = new Client({ name: 'tollgate-ts-client', version: '1.0.0' });
await client.connect(transport);
for (let i = 0; i < Number(n); i++) {
    try {
        const r = await client.callTool({ name: tool, arguments: { text: 'q' } });
        out({ result: { isError: r.isError ?? false, text: (r.content ?? []).map(c => c.text ?? '').join(''), meta: r._meta ?? null } });
    } catch (e) {
        out({ error: { name: e.constructor?.name ?? '', code: e.code ?? null, message: e.message, data: e.data ?? null } });
    }
}
await client.close();
