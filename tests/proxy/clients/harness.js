// SPDX-License-Identifier: MIT
//
// What test-direct.js and test-proxy.js share: installing the client
// libraries (npm-install.sh; its skip, 77, passes through), starting
// upstream.js and other servers that print "listening on ADDRESS", running a
// client script and reading its result line, the upstream's record of a
// request (found by the X-Test-Case header each case sends), comparing a
// result with what a case wants, and running the cases a few at a time.
'use strict';

const {spawn, spawnSync} = require('child_process');
const http = require('http');
const os = require('os');
const path = require('path');

const HERE = __dirname;
const UPSTREAM = path.join(HERE, '..', 'upstream.js');
// common.js's default prompt, "say something short please": 4 words (the
// upstream's input count), 26 bytes.
const PROMPT = 'say something short please';
const PROMPT_WORDS = 4;

function fail(msg) {
        process.stderr.write(`FAIL: ${msg}\n`);
        process.exit(1);
}

function skip(msg) {
        process.stdout.write(`SKIP: ${msg}\n`);
        process.exit(77);
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

// Starts argv; resolves {proc, address, output()} once its stdout or stderr
// has a line matching "listening on ADDRESS".
function startListening(argv, what, env) {
        return new Promise((resolve, reject) => {
                const proc = spawn(argv[0], argv.slice(1), {stdio: ['ignore', 'pipe', 'pipe'], env: env || process.env});
                let out = '';
                let done = false;
                const timer = setTimeout(() => {
                        done = true;
                        reject(new Error(`${what}: not listening in 10 s: ${out}`));
                }, 10000);
                const onData = (c) => {
                        out += c;
                        const m = /listening on (\S+)/.exec(out);
                        if (m && !done) {
                                done = true;
                                clearTimeout(timer);
                                resolve({proc, address: m[1], output: () => out});
                        }
                };
                proc.stdout.on('data', onData);
                proc.stderr.on('data', onData);
                proc.on('exit', (code, sig) => {
                        if (!done) {
                                done = true;
                                clearTimeout(timer);
                                reject(new Error(`${what} exited ${code ?? sig}: ${out}`));
                        }
                });
        });
}

function startUpstream(args) {
        return startListening([process.execPath, UPSTREAM, ...args], `upstream.js ${args.join(' ')}`);
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
        const i = address.lastIndexOf(':');
        return JSON.parse((await httpGet({host: address.slice(0, i), port: address.slice(i + 1), path: '/__requests'})).body);
}

// The upstream's record of a case's request (undefined: none arrived).
// wantClosed: wait until it says the client went away, which the upstream
// learns a moment after the client did.
async function recordOf(address, name, wantClosed) {
        let rec;
        for (let i = 0; i < 100; i++) {
                rec = (await records(address)).find((x) => x.headers['x-test-case'] === name);
                if (!wantClosed || (rec && rec.client_closed)) break;
                await sleep(20);
        }
        return rec;
}

function sleep(ms) {
        return new Promise((resolve) => setTimeout(resolve, ms));
}

// Runs a client script; resolves {code, result (its last line, parsed, or
// null), stdout, stderr}.
function runClient(nodeModules, script, args) {
        return new Promise((resolve) => {
                const env = {...process.env, NODE_PATH: nodeModules};
                const proc = spawn(process.execPath, [path.join(HERE, script), ...args], {env});
                let stdout = '';
                let stderr = '';
                proc.stdout.on('data', (c) => (stdout += c));
                proc.stderr.on('data', (c) => (stderr += c));
                proc.on('exit', (code) => {
                        let result = null;
                        try {
                                result = JSON.parse(stdout.trim().split('\n').pop());
                        } catch (e) {
                                result = null;
                        }
                        resolve({code, result, stdout, stderr});
                });
        });
}

function tokens(n) {
        const t = [];
        for (let i = 1; i <= n; i++) t.push(`tok${i}`);
        return t.join(' ');
}

function dig(obj, dotted) {
        let v = obj;
        for (const k of dotted.split('.')) {
                if (v === undefined || v === null) return undefined;
                v = v[k];
        }
        return v;
}

const OPENAI_USAGE = (i, n) => ({prompt_tokens: i, completion_tokens: n, total_tokens: i + n});
const RESP_USAGE = (i, n) => ({input_tokens: i, output_tokens: n, total_tokens: i + n});
const ANTH_USAGE = (i, n, read = 0, create = 0) => ({input_tokens: i, output_tokens: n,
    cache_read_input_tokens: read, cache_creation_input_tokens: create});
const OLLAMA_USAGE = (i, n) => ({prompt_eval_count: i, eval_count: n});

// What differs between a client's result r and the case's want:
//   error: true (any error) or a class name, with status
//   stopped: K (the client gave up after K deltas)
//   usage: fields the library must report exactly (null: none at all; for
//          Ollama no other field either), finish, n (output tokens: the
//          text and, for streams, the deltas), delayMs (the deltas arrived
//          spread out, one per chunk), maxDeltas (fewer than this, for cuts)
//   any other key: a dotted path into the result that must be equal.
function compare(c, r) {
        const bad = [];
        const w = c.want;
        if (w.error !== undefined) {
                if (!r.error) return [`expected an error, the library reported success`];
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
        } else if (w.usage !== undefined) {
                for (const [k, v] of Object.entries(w.usage))
                        if (dig(r.usage, k) !== v) bad.push(`usage.${k} ${dig(r.usage, k)}, expected ${v}`);
                if (c.lib === 'ollama.js')
                        for (const k of Object.keys(r.usage || {}))
                                if (!(k in w.usage)) bad.push(`usage.${k} present (${r.usage[k]}), expected absent`);
        }
        if (w.finish !== undefined && r.finish !== w.finish) bad.push(`finish ${r.finish}, expected ${w.finish}`);
        if (w.n !== undefined) {
                if (r.text !== tokens(w.n)) bad.push(`text "${r.text}", expected ${w.n} tokens`);
                if (c.args.includes('--stream') && r.deltas !== w.n) bad.push(`${r.deltas} deltas, expected ${w.n}`);
        }
        if (w.maxDeltas !== undefined) {
                if (!(r.deltas < w.maxDeltas)) bad.push(`${r.deltas} deltas, expected fewer than ${w.maxDeltas}`);
                if (r.text !== tokens(r.deltas)) bad.push(`text "${r.text}" is not the first ${r.deltas} tokens`);
        }
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
                if (['usage', 'finish', 'n', 'delayMs', 'maxDeltas'].includes(k)) continue;
                if (dig(r, k) !== v) bad.push(`${k} ${JSON.stringify(dig(r, k))}, expected ${JSON.stringify(v)}`);
        }
        return bad;
}

// What differs between the upstream's record of a case's request and the
// case's record fields (dotted paths; undefined: absent). null for record:
// the request must not have reached the upstream.
function compareRecord(c, rec) {
        if (c.record === null) return rec ? [`the request reached the upstream: ${JSON.stringify(rec.body)}`] : [];
        if (!rec) return ['the upstream recorded no request for this case'];
        const bad = [];
        for (const [k, v] of Object.entries(c.record || {}))
                if (dig(rec, k) !== v) bad.push(`upstream's ${k} ${JSON.stringify(dig(rec, k))}, expected ${JSON.stringify(v)}`);
        if (c.want.n !== undefined && rec.reply && rec.reply.output_tokens !== c.want.n)
                bad.push(`upstream's reply.output_tokens ${rec.reply.output_tokens}, expected ${c.want.n}`);
        return bad;
}

// Runs run(case) for every case, a few at a time; prints "ok NAME" or
// "not ok NAME: what differed"; resolves the number that failed.
async function runCases(cases, run) {
        let failed = 0;
        const queue = [...cases];
        const workers = [];
        for (let w = 0; w < Math.max(2, os.cpus().length); w++) {
                workers.push((async () => {
                        for (let c = queue.shift(); c; c = queue.shift()) {
                                let bad;
                                try {
                                        bad = await run(c);
                                } catch (e) {
                                        bad = [e.stack || String(e)];
                                }
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
        return failed;
}

module.exports = {
        HERE, UPSTREAM, PROMPT, PROMPT_WORDS, fail, skip, installLibraries, startListening, startUpstream, httpGet,
        records, recordOf, sleep, runClient, tokens, dig, compare, compareRecord, runCases, OPENAI_USAGE, RESP_USAGE,
        ANTH_USAGE, OLLAMA_USAGE,
};
