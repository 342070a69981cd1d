// A test upstream: the official MCP TypeScript SDK on Express 5, written the way the SDK's
// README examples write it (McpServer, registerTool / registerPrompt / registerResource, a
// session map keyed by Mcp-Session-Id, the legacy HTTP+SSE transport beside it). It counts
// what it executed, so tests can assert what really ran behind the proxy.
//
//   node server.mjs [--stateless]     (or TESTUPSTREAM_STATELESS=1)
//
// It listens on 127.0.0.1 with a free port and prints `listening 127.0.0.1:PORT` as the first
// line on stdout (nothing else goes to stdout). It exits when stdin closes, so a test that dies
// never leaks it. Counters: GET /__counts (JSON object key -> count), POST /__reset. Tests call
// these on the upstream directly, never through the proxy.
import { randomUUID, webcrypto } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import * as z from 'zod/v4';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

// Node 18 (Debian 12's nodejs) has no globalThis.crypto; the SDK's FAQ polyfills it so.
if (!globalThis.crypto) {
    globalThis.crypto = webcrypto;
}

const stateless = process.argv.includes('--stateless') || process.env.TESTUPSTREAM_STATELESS === '1';

// What this upstream executed: "tools/call <name>", "prompts/get <name>",
// "resources/read <uri as the handler received it>".
const counts = new Map();
const count = key => counts.set(key, (counts.get(key) ?? 0) + 1);

const getServer = () => {
    const server = new McpServer({ name: 'testupstream-ts', version: '1.0.0' });
    for (const name of ['echo', 'search']) {
        server.registerTool(
            name,
            { description: `${name} the text`, inputSchema: { text: z.string() } },
            async ({ text }) => {
                count(`tools/call ${name}`);
                return { content: [{ type: 'text', text: `${name}:${text}` }] };
            }
        );
    }
    server.registerTool(
        'slow',
        {
            description: 'Sleeps for ms milliseconds (at most 10 s)',
            inputSchema: { ms: z.number(), text: z.string().optional() }
        },
        async ({ ms, text }, extra) => {
            count('tools/call slow');
            try {
                await sleep(Math.min(Math.max(ms, 0), 10_000), undefined, { signal: extra.signal });
            } catch {
                // Cancelled: the request is gone, nobody reads the result.
            }
            return { content: [{ type: 'text', text: `slow:${text ?? ''}` }] };
        }
    );
    server.registerPrompt('summary', { description: 'Summarise' }, async () => {
        count('prompts/get summary');
        return { messages: [{ role: 'user', content: { type: 'text', text: 'summarise' } }] };
    });
    // The SDK looks a resource up by new URL(uri).toString(), so file://localhost/x, FILE:///x
    // and the like reach these handlers as file:///x; uri is that URL.
    for (const [name, uri, text] of [
        ['report', 'file:///data/report.txt', 'report'],
        ['motd', 'file:///motd', 'hello']
    ]) {
        server.registerResource(name, uri, { mimeType: 'text/plain' }, async url => {
            count(`resources/read ${url.href}`);
            return { contents: [{ uri: url.href, text }] };
        });
    }
    return server;
};

const app = express();
app.use(express.json());

app.get('/__counts', (req, res) => {
    res.json(Object.fromEntries(counts));
});
app.post('/__reset', (req, res) => {
    counts.clear();
    res.status(204).end();
});

// Transports by session id, as the README's backwards-compatibility example keeps them.
const transports = { streamable: {}, sse: {} };

if (stateless) {
    // The README's stateless example: a new server and transport for every request.
    app.post('/mcp', async (req, res) => {
        try {
            const server = getServer();
            const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
            res.on('close', () => {
                transport.close();
                server.close();
            });
            await server.connect(transport);
            await transport.handleRequest(req, res, req.body);
        } catch (error) {
            console.error('Error handling MCP request:', error);
            if (!res.headersSent) {
                res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null });
            }
        }
    });
    const methodNotAllowed = (req, res) => {
        res.status(405).json({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed.' }, id: null });
    };
    app.get('/mcp', methodNotAllowed);
    app.delete('/mcp', methodNotAllowed);
} else {
    // The README's session example.
    app.post('/mcp', async (req, res) => {
        const sessionId = req.headers['mcp-session-id'];
        let transport;
        if (sessionId && transports.streamable[sessionId]) {
            transport = transports.streamable[sessionId];
        } else if (!sessionId && isInitializeRequest(req.body)) {
            transport = new StreamableHTTPServerTransport({
                sessionIdGenerator: () => randomUUID(),
                onsessioninitialized: sessionId => {
                    transports.streamable[sessionId] = transport;
                }
            });
            transport.onclose = () => {
                if (transport.sessionId) {
                    delete transports.streamable[transport.sessionId];
                }
            };
            await getServer().connect(transport);
        } else {
            res.status(400).json({
                jsonrpc: '2.0',
                error: { code: -32000, message: 'Bad Request: No valid session ID provided' },
                id: null
            });
            return;
        }
        await transport.handleRequest(req, res, req.body);
    });
    const handleSessionRequest = async (req, res) => {
        const sessionId = req.headers['mcp-session-id'];
        if (!sessionId || !transports.streamable[sessionId]) {
            res.status(400).send('Invalid or missing session ID');
            return;
        }
        await transports.streamable[sessionId].handleRequest(req, res);
    };
    app.get('/mcp', handleSessionRequest);
    app.delete('/mcp', handleSessionRequest);
}

// The legacy HTTP+SSE transport (2024-11-05), as the README's backwards-compatibility example:
// GET /sse announces `/messages?sessionId=<uuid>` in its endpoint event.
app.get('/sse', async (req, res) => {
    const transport = new SSEServerTransport('/messages', res);
    transports.sse[transport.sessionId] = transport;
    res.on('close', () => {
        delete transports.sse[transport.sessionId];
    });
    await getServer().connect(transport);
});
app.post('/messages', async (req, res) => {
    const sessionId = req.query.sessionId;
    const transport = transports.sse[sessionId];
    if (transport) {
        await transport.handlePostMessage(req, res, req.body);
    } else {
        res.status(400).send('No transport found for sessionId');
    }
});

const httpServer = app.listen(0, '127.0.0.1', error => {
    if (error) {
        console.error('listen:', error);
        process.exit(1);
    }
    const { address, port } = httpServer.address();
    process.stdout.write(`listening ${address}:${port}\n`);
});

// Exit when the parent closes stdin (or dies).
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
