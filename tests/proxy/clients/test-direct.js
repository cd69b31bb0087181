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

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const {PROMPT_WORDS, fail, installLibraries, startUpstream, recordOf, runClient, tokens, compare, compareRecord,
    runCases, OPENAI_USAGE, RESP_USAGE, ANTH_USAGE, OLLAMA_USAGE} = require('./harness.js');

// ---- the cases --------------------------------------------------------------
// lib: the script; up: which upstream (openai or ollama flavor); args; want:
// usage fields the library must report (exactly; null: no usage at all),
// finish, n (output tokens: the text and, for streams, the deltas), record:
// fields of what the upstream recorded (dotted paths into the request).

const I = PROMPT_WORDS;
const DELAY = ['--header', 'X-Test-Delay-Ms: 100'];

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
            want: {usage: OPENAI_USAGE(I, 5), finish: 'stop', n: 5, delayMs: 100},
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
        {name: 'openai-chat-ignore-max', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max', '3', '--header', 'X-Test-Ignore-Max: 1', '--header',
                'X-Test-Output-Tokens: 9'],
            want: {usage: OPENAI_USAGE(I, 9), finish: 'stop', n: 9}},
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
            want: {usage: RESP_USAGE(I, 6), finish: 'completed', n: 6, delayMs: 100, final_text: tokens(6)}},
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
            want: {usage: ANTH_USAGE(I, 5, 50, 0), finish: 'end_turn', n: 5, delayMs: 100, final_text: tokens(5)}},
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
            want: {usage: OLLAMA_USAGE(I, 6), finish: 'stop', n: 6, delayMs: 100}},
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

async function runCase(nodeModules, ups, c) {
        const address = ups[c.up || 'openai'];
        const args = [...c.args, '--base', `http://${address}`, '--header', `X-Test-Case: ${c.name}`];
        const res = await runClient(nodeModules, c.lib, args);
        if (!res.result) return [`${c.lib} exited ${res.code} without a result line: ${res.stdout}${res.stderr}`];
        const bad = compare(c, res.result);
        if ((res.result.error ? 3 : 0) !== res.code) bad.push(`exit status ${res.code}`);
        const wantClosed = Boolean(c.record && c.record.client_closed);
        bad.push(...compareRecord(c, await recordOf(address, c.name, wantClosed)));
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
        let failed = await runCases(CASES, (c) => runCase(nodeModules, ups, c));
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
