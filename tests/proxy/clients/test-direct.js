#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// The real client libraries against tests/proxy/upstream.js directly, no
// proxy between: proves the test upstream is faithful enough for them (they
// parse every reply and stream without an error and report exactly the usage
// the upstream's rules give) and that its test controls work as the proxy's
// tests will rely on: output clamped by each API's own max-output field and
// not by others (Ollama's /v1 ignores max_completion_tokens), include_usage,
// llama.cpp timings, cached input per API, Ollama's omitted zero counts and
// "load" reply, chunks delivered one at a time with X-Test-Delay-Ms, a
// dropped connection (X-Test-Abort-After) seen as an error by every library,
// a client that goes away recorded as client_closed, 429s raised as each
// library's rate-limit error, and GET /__requests recording what was sent.
//
// Environment (meson sets it): CLIENTS_BUILD, where npm-install.sh installs
// the libraries (skips with 77 when it cannot). Exit 0, 1 on any failed
// case (each named with what differed), 77 on a skip.
'use strict';

const {spawn, spawnSync} = require('child_process');
const http = require('http');
const os = require('os');
const path = require('path');
const fs = require('fs');

const HERE = __dirname;
const UPSTREAM = path.join(HERE, '..', 'upstream.js');
const PROMPT_WORDS = 4; // common.js's default prompt, "say something short please"

function fail(msg) {
        process.stderr.write(`FAIL: ${msg}\n`);
        process.exit(1);
}

function installLibraries() {
        const dest = process.env.CLIENTS_BUILD;
        if (!dest) fail('$CLIENTS_BUILD is not set: run this test through meson test');
        const r = spawnSync(path.join(HERE, 'npm-install.sh'), [dest], {encoding: 'utf8'});
        process.stdout.write(r.stdout || '');
        process.stderr.write(r.stderr || '');
        if (r.status === 77) process.exit(77);
        if (r.status !== 0) fail(`npm-install.sh exited ${r.status}`);
        return path.join(dest, 'node_modules');
}

// Starts upstream.js with ARGS; resolves {proc, address} once it prints
// "listening on".
function startUpstream(args) {
        return new Promise((resolve, reject) => {
                const proc = spawn(process.execPath, [UPSTREAM, ...args], {stdio: ['ignore', 'pipe', 'inherit']});
                let out = '';
                const timer = setTimeout(() => reject(new Error(`upstream.js ${args.join(' ')}: not listening in 10 s`)),
                    10000);
                proc.stdout.on('data', (c) => {
                        out += c;
                        const m = /listening on (\S+)\n/.exec(out);
                        if (m) {
                                clearTimeout(timer);
                                resolve({proc, address: m[1]});
                        }
                });
                proc.on('exit', (code) => reject(new Error(`upstream.js ${args.join(' ')} exited ${code}`)));
        });
}

function httpGet(opts) {
        return new Promise((resolve, reject) => {
                http.get(opts, (res) => {
                        let body = '';
                        res.on('data', (c) => (body += c));
                        res.on('end', () => resolve({status: res.statusCode, headers: res.headers, body}));
                }).on('error', reject);
        });
}

async function records(address) {
        const [host, port] = address.split(':');
        return JSON.parse((await httpGet({host, port, path: '/__requests'})).body);
}

function runClient(nodeModules, script, args) {
        return new Promise((resolve) => {
                const env = {...process.env, NODE_PATH: nodeModules};
                const proc = spawn(process.execPath, [path.join(HERE, script), ...args], {env});
                let stdout = '';
                let stderr = '';
                proc.stdout.on('data', (c) => (stdout += c));
                proc.stderr.on('data', (c) => (stderr += c));
                proc.on('exit', (code) => resolve({code, stdout, stderr}));
        });
}

function tokens(n) {
        const t = [];
        for (let i = 1; i <= n; i++) t.push(`tok${i}`);
        return t.join(' ');
}

// ---- the cases --------------------------------------------------------------
// lib: the script; up: which upstream (openai or ollama flavor); args; want:
// usage fields the library must report (exactly; null: no usage at all),
// finish, n (output tokens: the text and, for streams, the deltas), record:
// fields of what the upstream recorded (dotted paths into the request).

const OPENAI_USAGE = (i, n) => ({prompt_tokens: i, completion_tokens: n, total_tokens: i + n});
const RESP_USAGE = (i, n) => ({input_tokens: i, output_tokens: n, total_tokens: i + n});
const ANTH_USAGE = (i, n, read = 0, create = 0) => ({input_tokens: i, output_tokens: n,
    cache_read_input_tokens: read, cache_creation_input_tokens: create});
const OLLAMA_USAGE = (i, n) => ({prompt_eval_count: i, eval_count: n});
const I = PROMPT_WORDS;
const DELAY = ['--header', 'X-Test-Delay-Ms: 40'];

const CASES = [
        // OpenAI chat completions
        {name: 'openai-chat', lib: 'openai.js', args: ['--endpoint', 'chat', '--max', '5'],
            want: {usage: OPENAI_USAGE(I, 5), finish: 'length', n: 5},
            record: {'body.max_completion_tokens': 5, 'body.stream': undefined}},
        {name: 'openai-chat-max-tokens', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max-field', 'max_tokens', '--max', '3'],
            want: {usage: OPENAI_USAGE(I, 3), finish: 'length', n: 3}},
        {name: 'openai-chat-natural-stop', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max', '100', '--header', 'X-Test-Output-Tokens: 12'],
            want: {usage: OPENAI_USAGE(I, 12), finish: 'stop', n: 12}},
        {name: 'openai-chat-stream-usage', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--include-usage', '--header', 'X-Test-Output-Tokens: 5', ...DELAY],
            want: {usage: OPENAI_USAGE(I, 5), finish: 'stop', n: 5, delayMs: 40},
            record: {'body.stream': true, 'body.stream_options.include_usage': true}},
        {name: 'openai-chat-stream-no-usage', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--max', '7'],
            want: {usage: null, finish: 'length', n: 7}, record: {'body.stream_options': undefined}},
        {name: 'openai-chat-cached', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max', '2', '--header', 'X-Test-Input-Tokens: 5', '--header',
                'X-Test-Cache-Read-Tokens: 30'],
            want: {usage: {...OPENAI_USAGE(35, 2), 'prompt_tokens_details.cached_tokens': 30}, finish: 'length', n: 2}},
        {name: 'openai-chat-no-usage', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max', '2', '--header', 'X-Test-No-Usage: 1'],
            want: {usage: null, finish: 'length', n: 2}},
        {name: 'openai-chat-stop-after', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--stop-after', '2', '--header', 'X-Test-Output-Tokens: 10',
                ...DELAY],
            want: {stopped: 2}, record: {client_closed: true}},
        {name: 'openai-chat-abort', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--header', 'X-Test-Abort-After: 2'],
            want: {error: true}, record: {aborted: true, sent: 2}},
        {name: 'openai-chat-429', lib: 'openai.js', args: ['--endpoint', 'chat', '--header', 'X-Test-Status: 429'],
            want: {error: 'RateLimitError', status: 429}},
        // OpenAI completions
        {name: 'openai-completions-default-max', lib: 'openai.js', args: ['--endpoint', 'completions'],
            want: {usage: OPENAI_USAGE(I, 16), finish: 'length', n: 16}},
        {name: 'openai-completions-stream', lib: 'openai.js',
            args: ['--endpoint', 'completions', '--stream', '--include-usage', '--max', '4'],
            want: {usage: OPENAI_USAGE(I, 4), finish: 'length', n: 4}},
        // OpenAI Responses
        {name: 'openai-responses', lib: 'openai.js',
            args: ['--endpoint', 'responses', '--max', '20', '--header', 'X-Test-Output-Tokens: 30'],
            want: {usage: RESP_USAGE(I, 20), finish: 'incomplete', n: 20,
                'incomplete_details.reason': 'max_output_tokens'}},
        {name: 'openai-responses-stream', lib: 'openai.js',
            args: ['--endpoint', 'responses', '--stream', '--header', 'X-Test-Output-Tokens: 6', ...DELAY],
            want: {usage: RESP_USAGE(I, 6), finish: 'completed', n: 6, delayMs: 40, final_text: tokens(6)}},
        {name: 'openai-responses-stream-incomplete', lib: 'openai.js',
            args: ['--endpoint', 'responses', '--stream', '--max', '16', '--header', 'X-Test-Output-Tokens: 40'],
            want: {usage: RESP_USAGE(I, 16), finish: 'incomplete', n: 16, terminal: 'response.incomplete'}},
        {name: 'openai-responses-below-16', lib: 'openai.js', args: ['--endpoint', 'responses', '--max', '5'],
            want: {error: 'BadRequestError', status: 400}},
        // Ollama's /v1 (upstream flavor ollama) and llama.cpp's (per request)
        {name: 'ollama-v1-ignores-max-completion-tokens', lib: 'openai.js', up: 'ollama',
            args: ['--endpoint', 'chat', '--max', '3', '--header', 'X-Test-Output-Tokens: 8'],
            want: {usage: OPENAI_USAGE(I, 8), finish: 'stop', n: 8}},
        {name: 'ollama-v1-max-tokens', lib: 'openai.js', up: 'ollama',
            args: ['--endpoint', 'chat', '--stream', '--include-usage', '--max-field', 'max_tokens', '--max', '3',
                '--header', 'X-Test-Output-Tokens: 8'],
            want: {usage: OPENAI_USAGE(I, 3), finish: 'length', n: 3}},
        {name: 'llamacpp-timings-stream', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--header', 'X-Test-Flavor: llamacpp', '--header',
                'X-Test-Output-Tokens: 6'],
            want: {usage: null, finish: 'stop', n: 6, 'timings.predicted_n': 6, 'timings.prompt_n': I,
                'timings.cache_n': 0}},
        {name: 'llamacpp-n-predict-over-max-tokens', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max-field', 'n_predict', '--max', '2', '--header',
                'X-Test-Flavor: llamacpp'],
            want: {usage: OPENAI_USAGE(I, 2), finish: 'length', n: 2, 'timings.predicted_n': 2}},
        // Anthropic
        {name: 'anthropic-messages', lib: 'anthropic.js', args: ['--max', '6'],
            want: {usage: ANTH_USAGE(I, 6), finish: 'max_tokens', n: 6}},
        {name: 'anthropic-messages-cached', lib: 'anthropic.js',
            args: ['--max', '100', '--header', 'X-Test-Output-Tokens: 3', '--header', 'X-Test-Input-Tokens: 7',
                '--header', 'X-Test-Cache-Read-Tokens: 100', '--header', 'X-Test-Cache-Creation-Tokens: 20'],
            want: {usage: ANTH_USAGE(7, 3, 100, 20), finish: 'end_turn', n: 3}},
        {name: 'anthropic-stream', lib: 'anthropic.js',
            args: ['--stream', '--max', '100', '--header', 'X-Test-Output-Tokens: 5', '--header',
                'X-Test-Cache-Read-Tokens: 50', ...DELAY],
            want: {usage: ANTH_USAGE(I, 5, 50, 0), finish: 'end_turn', n: 5, delayMs: 40, final_text: tokens(5)}},
        {name: 'anthropic-stream-max-tokens', lib: 'anthropic.js', args: ['--stream', '--max', '9'],
            want: {usage: ANTH_USAGE(I, 9), finish: 'max_tokens', n: 9}},
        {name: 'anthropic-stop-after', lib: 'anthropic.js',
            args: ['--stream', '--stop-after', '2', '--header', 'X-Test-Output-Tokens: 10', ...DELAY],
            want: {stopped: 2}, record: {client_closed: true}},
        {name: 'anthropic-abort', lib: 'anthropic.js', args: ['--stream', '--header', 'X-Test-Abort-After: 3'],
            want: {error: true}, record: {aborted: true, sent: 3}},
        {name: 'anthropic-429', lib: 'anthropic.js', args: ['--header', 'X-Test-Status: 429'],
            want: {error: 'RateLimitError', status: 429}},
        // Ollama native
        {name: 'ollama-chat', lib: 'ollama.js', up: 'ollama', args: ['--endpoint', 'chat', '--max', '4'],
            want: {usage: OLLAMA_USAGE(I, 4), finish: 'length', n: 4}, record: {'body.options.num_predict': 4}},
        {name: 'ollama-chat-stream', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'chat', '--stream', '--header', 'X-Test-Output-Tokens: 6', ...DELAY],
            want: {usage: OLLAMA_USAGE(I, 6), finish: 'stop', n: 6, delayMs: 40}},
        {name: 'ollama-generate', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'generate', '--max', '-1', '--header', 'X-Test-Output-Tokens: 7'],
            want: {usage: OLLAMA_USAGE(I, 7), finish: 'stop', n: 7}},
        {name: 'ollama-generate-stream', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'generate', '--stream', '--max', '3'],
            want: {usage: OLLAMA_USAGE(I, 3), finish: 'length', n: 3}},
        {name: 'ollama-zero-prompt-omitted', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'chat', '--stream', '--max', '2', '--header', 'X-Test-Input-Tokens: 0'],
            want: {usage: {eval_count: 2}, finish: 'length', n: 2}},
        {name: 'ollama-load', lib: 'ollama.js', up: 'ollama', args: ['--endpoint', 'chat', '--prompt', ''],
            want: {usage: {}, finish: 'load', n: 0}},
        {name: 'ollama-stop-after', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'generate', '--stream', '--stop-after', '2', '--header', 'X-Test-Output-Tokens: 10',
                ...DELAY],
            want: {stopped: 2}, record: {client_closed: true}},
        {name: 'ollama-abort', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'chat', '--stream', '--header', 'X-Test-Abort-After: 1'],
            want: {error: true}, record: {aborted: true, sent: 1}},
        {name: 'ollama-429', lib: 'ollama.js', up: 'ollama', args: ['--header', 'X-Test-Status: 429'],
            want: {error: 'ResponseError', status: 429}},
];

function dig(obj, dotted) {
        let v = obj;
        for (const k of dotted.split('.')) {
                if (v === undefined || v === null) return undefined;
                v = v[k];
        }
        return v;
}

// Returns what differs between a client's result and the case's want.
function compare(c, r) {
        const bad = [];
        const w = c.want;
        if (w.error !== undefined) {
                if (!r.error) return [`expected an error, the library reported success: ${JSON.stringify(r)}`];
                if (w.error !== true && r.error !== w.error) bad.push(`error class ${r.error}, expected ${w.error}`);
                if (w.status !== undefined && r.status !== w.status) bad.push(`status ${r.status}, expected ${w.status}`);
                return bad;
        }
        if (r.error) return [`the library raised ${r.error} (status ${r.status}): ${r.message}`];
        if (w.stopped !== undefined) {
                if (!r.stopped || r.deltas !== w.stopped) bad.push(`stopped ${r.stopped} after ${r.deltas} deltas`);
                return bad;
        }
        if (w.usage === null) {
                if (r.usage !== null) bad.push(`usage ${JSON.stringify(r.usage)}, expected none`);
        } else {
                for (const [k, v] of Object.entries(w.usage))
                        if (dig(r.usage, k) !== v) bad.push(`usage.${k} ${dig(r.usage, k)}, expected ${v}`);
                if (c.lib === 'ollama.js')
                        for (const k of Object.keys(r.usage || {}))
                                if (!(k in w.usage)) bad.push(`usage.${k} present (${r.usage[k]}), expected absent`);
        }
        if (r.finish !== w.finish) bad.push(`finish ${r.finish}, expected ${w.finish}`);
        if (r.text !== tokens(w.n)) bad.push(`text "${r.text}", expected ${w.n} tokens`);
        if (c.args.includes('--stream') && r.deltas !== w.n) bad.push(`${r.deltas} deltas, expected ${w.n}`);
        if (w.delayMs) {
                // One token per chunk, a delay apart: the library hands them
                // over as they come (the first two may coalesce while the
                // client is still busy with the first).
                const spread = r.delta_ms[r.delta_ms.length - 1] - r.delta_ms[0];
                const min = (w.n - 2) * w.delayMs * 0.75;
                if (spread < min)
                        bad.push(`deltas arrived within ${spread.toFixed(1)} ms, expected at least ${min} ms apart overall`);
        }
        for (const [k, v] of Object.entries(w)) {
                if (['usage', 'finish', 'n', 'delayMs'].includes(k)) continue;
                if (dig(r, k) !== v) bad.push(`${k} ${JSON.stringify(dig(r, k))}, expected ${JSON.stringify(v)}`);
        }
        return bad;
}

async function checkRecord(c, address) {
        const bad = [];
        let rec;
        // The upstream learns of a client going away a moment after the
        // client exited.
        for (let i = 0; i < 50; i++) {
                rec = (await records(address)).find((x) => x.headers['x-test-case'] === c.name);
                if (!c.record || !('client_closed' in c.record) || (rec && rec.client_closed)) break;
                await new Promise((resolve) => setTimeout(resolve, 20));
        }
        if (!rec) return ['the upstream recorded no request for this case'];
        for (const [k, v] of Object.entries(c.record || {}))
                if (dig(rec, k) !== v) bad.push(`recorded ${k} ${JSON.stringify(dig(rec, k))}, expected ${JSON.stringify(v)}`);
        if (c.want.n !== undefined && rec.reply && rec.reply.output_tokens !== c.want.n)
                bad.push(`recorded reply.output_tokens ${rec.reply.output_tokens}, expected ${c.want.n}`);
        return bad;
}

async function runCase(nodeModules, ups, c) {
        const address = ups[c.up || 'openai'];
        const args = [...c.args, '--base', `http://${address}`, '--header', `X-Test-Case: ${c.name}`];
        const res = await runClient(nodeModules, c.lib, args);
        let r;
        try {
                r = JSON.parse(res.stdout.trim().split('\n').pop());
        } catch (e) {
                return [`${c.lib} exited ${res.code} without a result line: ${res.stdout}${res.stderr}`];
        }
        const bad = compare(c, r);
        if ((r.error ? 3 : 0) !== res.code) bad.push(`exit status ${res.code}`);
        bad.push(...(await checkRecord(c, address)));
        if (bad.length) bad.push(`(result: ${res.stdout.trim()})`);
        return bad;
}

// The upstream on a Unix socket answers too (the proxy may reach it so).
async function checkUnixListener() {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-upstream-'));
        const sock = path.join(dir, 'up.sock');
        const u = await startUpstream(['--listen', sock]);
        try {
                if (u.address !== sock) return [`listening on ${u.address}, expected ${sock}`];
                const r = await new Promise((resolve, reject) => {
                        const req = http.request({socketPath: sock, method: 'POST', path: '/api/generate',
                            headers: {'X-Test-Output-Tokens': '2'}}, (res) => {
                                let body = '';
                                res.on('data', (d) => (body += d));
                                res.on('end', () => resolve({type: res.headers['content-type'], body}));
                        });
                        req.on('error', reject);
                        req.end(JSON.stringify({model: 'm', prompt: 'one two three'}));
                });
                const lines = r.body.trim().split('\n').map((l) => JSON.parse(l));
                const last = lines[lines.length - 1];
                if (r.type !== 'application/x-ndjson' || lines.length !== 3 || last.eval_count !== 2 ||
                    last.prompt_eval_count !== 3 || last.done !== true)
                        return [`unix socket /api/generate answered ${r.type}: ${r.body}`];
                return [];
        } finally {
                u.proc.kill();
                fs.rmSync(dir, {recursive: true, force: true});
        }
}

async function main() {
        const nodeModules = installLibraries();
        const openai = await startUpstream(['--listen', '0']);
        const ollama = await startUpstream(['--listen', '127.0.0.1:0', '--flavor', 'ollama']);
        const ups = {openai: openai.address, ollama: ollama.address};
        let failed = 0;
        const queue = [...CASES];
        const workers = [];
        for (let w = 0; w < Math.max(2, os.cpus().length); w++) {
                workers.push((async () => {
                        for (let c = queue.shift(); c; c = queue.shift()) {
                                const bad = await runCase(nodeModules, ups, c);
                                if (bad.length) {
                                        failed++;
                                        process.stdout.write(`not ok ${c.name}: ${bad.join('; ')}\n`);
                                } else {
                                        process.stdout.write(`ok ${c.name}\n`);
                                }
                        }
                })());
        }
        await Promise.all(workers);
        const unix = await checkUnixListener();
        if (unix.length) {
                failed++;
                process.stdout.write(`not ok upstream-unix-socket: ${unix.join('; ')}\n`);
        } else {
                process.stdout.write('ok upstream-unix-socket\n');
        }
        openai.proc.kill();
        ollama.proc.kill();
        const libs = ['openai', '@anthropic-ai/sdk', 'ollama'].map((l) =>
                `${l} ${JSON.parse(fs.readFileSync(path.join(nodeModules, l, 'package.json'), 'utf8')).version}`);
        process.stdout.write(`node ${process.version}; ${libs.join(', ')}; ${CASES.length + 1 - failed}/${
                CASES.length + 1} cases passed\n`);
        process.exit(failed ? 1 : 0);
}

main().catch((e) => fail(e.stack || String(e)));
