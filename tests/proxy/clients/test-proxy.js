#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// The real client libraries through tokenbudget-proxy, in front of
// upstream.js, against a real tokenbudgetd (memory only, private socket):
// the usage each library reports is what the upstream sent, and the daemon
// charged exactly that to the client's own process (process:PID, the pid the
// client prints: the proxy asks onBehalfOf it) — input plus output, Anthropic's
// cache fields included, llama.cpp's timings when there is no usage, the
// output counted when a stream has no usage record. The proxy clamps each
// API's own max-output field to the grant (the upstream's record shows the
// forwarded body), injects include_usage and strips the extra chunk from a
// client that did not ask, answers a refusal with a 429 each library raises
// as its rate-limit error, cuts a stream that runs past the hard limit with
// a normal end the library accepts (and closes the upstream request), and
// cancels upstream and releases when the client goes away. Agent names come
// from a tb-NAME API key (not forwarded) or X-TokenBudget-Agent.
//
// Environment (meson sets it): TOKENBUDGETD, BUDGETCTL, TOKENBUDGET_PROXY,
// CLIENTS_BUILD. Not root: the daemon's config trusts this uid as a proxy
// (trusted_proxies). Exit 0, 1 on any failed case, 77 on a skip.
'use strict';

const {spawn, spawnSync} = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const {PROMPT, PROMPT_WORDS, fail, installLibraries, startListening, startUpstream, recordOf, runClient, sleep,
    compare, compareRecord, runCases, OPENAI_USAGE, RESP_USAGE, ANTH_USAGE, OLLAMA_USAGE} = require('./harness.js');

const I = PROMPT_WORDS;
// The proxy's prompt estimate (proxy/api.h: bytes of the prompt text / 4,
// rounded up): what a grant covers besides the max output.
const PROMPT_ESTIMATE = Math.ceil(Buffer.byteLength(PROMPT) / 4);
const HARD_MULTIPLIER = 2; // the daemon's default hard_multiplier
const DELAY = ['--header', 'X-Test-Delay-Ms: 100'];
// A stream that runs past any max output: 100 tokens, 2 ms apart, so that the
// upstream is still sending when the proxy cuts it.
const RUNAWAY = ['--header', 'X-Test-Ignore-Max: 1', '--header', 'X-Test-Output-Tokens: 100', '--header',
    'X-Test-Delay-Ms: 2'];
const CUT_MAX = 10;
const RESPONSES_CUT_MAX = 16; // the least max_output_tokens OpenAI accepts
const hardLimit = (max) => HARD_MULTIPLIER * (max + PROMPT_ESTIMATE);

function env(name) {
        const v = process.env[name];
        if (!v) fail(`$${name} is not set: run this test through meson test`);
        return v;
}

// The daemon's configuration: a rule that clamps what agent "clamp" may be
// granted, one that leaves agent "broke" 10 tokens a minute (a refusal), no
// runaway breaker (the cut cases pass their hard limit on purpose, and the
// breaker would then refuse later cases of the same agent or command).
function daemonConfig() {
        const trusted = process.getuid() === 0 ? '' : `trusted_proxies = [ "${process.getuid()}" ];\n`;
        return `${trusted}breaker = { runaway_breaches = 0; };
rules = (
  { name = "clamp"; match = { agent = "clamp"; }; max_request_tokens = 300; },
  { name = "broke"; match = { agent = "broke"; }; per = "agent"; tokens_per_minute = 10; }
);
`;
}

function status(sock) {
        const r = spawnSync(env('BUDGETCTL'), ['-s', sock, '--json', 'status', '--all'], {encoding: 'utf8'});
        if (r.status !== 0) throw new Error(`budgetctl status: exit ${r.status}: ${r.stderr}`);
        return JSON.parse(r.stdout);
}

function minuteUsed(scope) {
        const w = scope.windows.find((x) => x.span === 'minute');
        return w ? w.used : undefined;
}

// A scope's state once nothing is open in it (the proxy releases after the
// reply has gone out): {used, scope}; used 0 and scope undefined when the
// daemon has no such scope.
async function settled(sock, name) {
        let scope;
        for (let i = 0; i < 100; i++) {
                scope = status(sock).scopes.find((s) => s.name === name);
                if (scope && scope.allocations === 0 && scope.reserved === 0) break;
                if (!scope && i >= 5) break;
                await sleep(20);
        }
        if (scope && (scope.allocations !== 0 || scope.reserved !== 0))
                throw new Error(`${name} still holds ${scope.allocations} allocations, ${scope.reserved} reserved`);
        return {used: scope ? minuteUsed(scope) : 0, scope};
}

const CUT_WANT = {maxDeltas: 100};
const CASES = [
        // Usage exactly as the upstream sent it, charged to the client's process.
        {name: 'p-openai-chat', lib: 'openai.js', args: ['--endpoint', 'chat', '--max', '5'],
            want: {usage: OPENAI_USAGE(I, 5), finish: 'length', n: 5}, record: {'body.max_completion_tokens': 5},
            charge: I + 5},
        {name: 'p-openai-chat-stream-stripped', lib: 'openai.js', args: ['--endpoint', 'chat', '--stream', '--max', '7'],
            want: {usage: null, finish: 'length', n: 7},
            record: {'body.stream_options.include_usage': true, 'body.max_completion_tokens': 7}, charge: I + 7},
        {name: 'p-openai-chat-stream-usage', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--include-usage', '--header', 'X-Test-Output-Tokens: 5', ...DELAY],
            want: {usage: OPENAI_USAGE(I, 5), finish: 'stop', n: 5, delayMs: 100}, charge: I + 5},
        {name: 'p-openai-completions-stream', lib: 'openai.js',
            args: ['--endpoint', 'completions', '--stream', '--include-usage', '--max', '4'],
            want: {usage: OPENAI_USAGE(I, 4), finish: 'length', n: 4}, record: {'body.max_tokens': 4}, charge: I + 4},
        {name: 'p-openai-responses', lib: 'openai.js',
            args: ['--endpoint', 'responses', '--max', '20', '--header', 'X-Test-Output-Tokens: 30'],
            want: {usage: RESP_USAGE(I, 20), finish: 'incomplete', n: 20}, record: {'body.max_output_tokens': 20},
            charge: I + 20},
        {name: 'p-openai-responses-stream', lib: 'openai.js',
            args: ['--endpoint', 'responses', '--stream', '--header', 'X-Test-Output-Tokens: 6'],
            want: {usage: RESP_USAGE(I, 6), finish: 'completed', n: 6}, charge: I + 6},
        {name: 'p-anthropic-cached', lib: 'anthropic.js',
            args: ['--max', '100', '--header', 'X-Test-Output-Tokens: 3', '--header', 'X-Test-Input-Tokens: 7',
                '--header', 'X-Test-Cache-Read-Tokens: 100', '--header', 'X-Test-Cache-Creation-Tokens: 20'],
            want: {usage: ANTH_USAGE(7, 3, 100, 20), finish: 'end_turn', n: 3}, record: {'body.max_tokens': 100},
            charge: 7 + 100 + 20 + 3},
        {name: 'p-anthropic-stream', lib: 'anthropic.js',
            args: ['--stream', '--max', '100', '--header', 'X-Test-Output-Tokens: 5', '--header',
                'X-Test-Cache-Read-Tokens: 50', ...DELAY],
            want: {usage: ANTH_USAGE(I, 5, 50, 0), finish: 'end_turn', n: 5, delayMs: 100}, charge: I + 50 + 5},
        {name: 'p-ollama-chat', lib: 'ollama.js', up: 'ollama', args: ['--endpoint', 'chat', '--max', '4'],
            want: {usage: OLLAMA_USAGE(I, 4), finish: 'length', n: 4}, record: {'body.options.num_predict': 4},
            charge: I + 4},
        {name: 'p-ollama-generate-stream', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'generate', '--stream', '--header', 'X-Test-Output-Tokens: 6', ...DELAY],
            want: {usage: OLLAMA_USAGE(I, 6), finish: 'stop', n: 6, delayMs: 100}, charge: I + 6},
        {name: 'p-ollama-zero-prompt-omitted', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'chat', '--stream', '--max', '2', '--header', 'X-Test-Input-Tokens: 0'],
            want: {usage: {eval_count: 2}, finish: 'length', n: 2}, charge: 2},
        // Ollama's /v1 behind --api ollama: Ollama ignores max_completion_tokens
        // (upstream.js too), so the proxy forwards the client's limit as
        // max_tokens, the field Ollama honours.
        {name: 'p-ollama-v1-max-tokens', lib: 'openai.js', up: 'ollama',
            args: ['--endpoint', 'chat', '--max', '3', '--header', 'X-Test-Output-Tokens: 8'],
            want: {usage: OPENAI_USAGE(I, 3), finish: 'length', n: 3}, record: {'body.max_tokens': 3}, charge: I + 3},
        // No usage from the upstream: llama.cpp's timings, else counted deltas.
        {name: 'p-llamacpp-timings', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max', '6', '--header', 'X-Test-Flavor: llamacpp', '--header',
                'X-Test-No-Usage: 1'],
            want: {usage: null, finish: 'length', n: 6, 'timings.predicted_n': 6}, charge: I + 6},
        {name: 'p-openai-stream-no-usage-counted', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--max', '6', '--header', 'X-Test-No-Usage: 1'],
            want: {usage: null, finish: 'length', n: 6}, chargeRange: [6, PROMPT_ESTIMATE + 6]},
        // The grant clamps the forwarded max output (rule clamp: 300 at most).
        {name: 'p-clamp', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--max', '700', '--header', 'X-TokenBudget-Agent: clamp', '--header',
                'X-Test-Output-Tokens: 600'],
            want: {finish: 'length'},
            check: (rec, r) => {
                    const f = rec.body.max_completion_tokens;
                    if (!Number.isInteger(f) || f > 300) return [`forwarded max_completion_tokens ${f}, expected at most 300`];
                    if (r.usage.completion_tokens !== f) return [`completion_tokens ${r.usage.completion_tokens}, expected ${f}`];
                    return [];
            },
            chargeFrom: (rec) => I + rec.body.max_completion_tokens},
        // Refused: 429 in each API's shape, raised as the library's own error.
        {name: 'p-429-openai', lib: 'openai.js', args: ['--endpoint', 'chat', '--header', 'X-TokenBudget-Agent: broke'],
            want: {error: 'RateLimitError', status: 429}, record: null, charge: 0},
        {name: 'p-429-anthropic', lib: 'anthropic.js', args: ['--stream', '--header', 'X-TokenBudget-Agent: broke'],
            want: {error: 'RateLimitError', status: 429}, record: null, charge: 0},
        {name: 'p-429-ollama', lib: 'ollama.js', up: 'ollama', args: ['--header', 'X-TokenBudget-Agent: broke'],
            want: {error: 'ResponseError', status: 429}, record: null, charge: 0},
        // Cut at the hard limit: a normal end for the library, the upstream
        // request closed, exactly the hard limit charged.
        {name: 'p-cut-openai', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--include-usage', '--max', String(CUT_MAX), '--header',
                'X-TokenBudget-Agent: cut1', ...RUNAWAY],
            want: {...CUT_WANT, finish: 'length', final_finish: 'length'}, record: {client_closed: true},
            check: (rec, r) => (r.usage && r.usage.completion_tokens === r.deltas ? []
                                                                                 : [`usage ${JSON.stringify(r.usage)} for ${r.deltas} deltas`]),
            cut: CUT_MAX},
        {name: 'p-cut-anthropic', lib: 'anthropic.js',
            args: ['--stream', '--max', String(CUT_MAX), '--header', 'X-TokenBudget-Agent: cut2', ...RUNAWAY],
            want: {...CUT_WANT, finish: 'max_tokens'}, record: {client_closed: true},
            check: (rec, r) => (r.usage.output_tokens === r.deltas ? []
                                                                    : [`output_tokens ${r.usage.output_tokens} for ${r.deltas} deltas`]),
            cut: CUT_MAX},
        {name: 'p-cut-ollama', lib: 'ollama.js', up: 'ollama',
            args: ['--endpoint', 'generate', '--stream', '--max', String(CUT_MAX), '--header',
                'X-TokenBudget-Agent: cut3', ...RUNAWAY],
            want: {...CUT_WANT, finish: 'length', done: true}, record: {client_closed: true},
            check: (rec, r) => (r.usage.eval_count === r.deltas ? []
                                                                 : [`eval_count ${r.usage.eval_count} for ${r.deltas} deltas`]),
            cut: CUT_MAX},
        {name: 'p-cut-responses', lib: 'openai.js',
            args: ['--endpoint', 'responses', '--stream', '--max', String(RESPONSES_CUT_MAX), '--header',
                'X-TokenBudget-Agent: cut4', ...RUNAWAY],
            want: {...CUT_WANT, finish: 'incomplete', terminal: 'response.incomplete',
                'incomplete_details.reason': 'max_output_tokens'},
            record: {client_closed: true},
            check: (rec, r) => (r.usage && r.usage.output_tokens === r.deltas ? []
                                                                              : [`usage ${JSON.stringify(r.usage)} for ${r.deltas} deltas`]),
            cut: RESPONSES_CUT_MAX},
        {name: 'p-cut-completions', lib: 'openai.js',
            args: ['--endpoint', 'completions', '--stream', '--max', String(CUT_MAX), '--header',
                'X-TokenBudget-Agent: cut5', ...RUNAWAY],
            want: {...CUT_WANT, finish: 'length'}, record: {client_closed: true}, cut: CUT_MAX},
        // A whole reply past the grant cannot be cut: it is charged in full,
        // past the hard limit (never less than the upstream's count).
        {name: 'p-overrun-whole', lib: 'anthropic.js',
            args: ['--max', String(CUT_MAX), '--header', 'X-TokenBudget-Agent: over', '--header', 'X-Test-Ignore-Max: 1',
                '--header', 'X-Test-Output-Tokens: 100'],
            want: {usage: ANTH_USAGE(I, 100), finish: 'end_turn', n: 100}, charge: I + 100},
        // The client goes away: the proxy cancels upstream and releases what
        // was counted.
        {name: 'p-client-gone', lib: 'openai.js',
            args: ['--endpoint', 'chat', '--stream', '--stop-after', '2', '--header', 'X-Test-Output-Tokens: 10',
                ...DELAY],
            want: {stopped: 2}, record: {client_closed: true}, chargeRange: [2, PROMPT_ESTIMATE + 10]},
        // Faults: the upstream down (502, the allocation released with
        // nothing charged) and the daemon down (503, fail closed), in each
        // API's error shape, which each library raises as its server error.
        {name: 'p-502-openai', lib: 'openai.js', up: 'down', args: ['--endpoint', 'chat'],
            want: {error: 'InternalServerError', status: 502}, record: null, charge: 0},
        {name: 'p-502-anthropic', lib: 'anthropic.js', up: 'down', args: ['--stream'],
            want: {error: 'InternalServerError', status: 502}, record: null, charge: 0},
        {name: 'p-502-ollama', lib: 'ollama.js', up: 'down', args: ['--stream'],
            want: {error: 'ResponseError', status: 502}, record: null, charge: 0},
        {name: 'p-503-openai', lib: 'openai.js', up: 'nodaemon', args: ['--endpoint', 'responses', '--stream'],
            want: {error: 'InternalServerError', status: 503}, record: null, charge: 0},
        {name: 'p-503-anthropic', lib: 'anthropic.js', up: 'nodaemon', args: [],
            want: {error: 'ServiceUnavailableError', status: 503}, record: null, charge: 0},
        {name: 'p-503-ollama', lib: 'ollama.js', up: 'nodaemon', args: ['--endpoint', 'generate'],
            want: {error: 'ResponseError', status: 503}, record: null, charge: 0},
        // Agent names: a tb-NAME key (kept from the upstream), a header.
        {name: 'p-agent-key', lib: 'openai.js', args: ['--endpoint', 'chat', '--max', '3', '--api-key', 'tb-keyagent'],
            want: {usage: OPENAI_USAGE(I, 3), n: 3}, record: {'headers.authorization': undefined}, charge: I + 3,
            agent: 'keyagent'},
        {name: 'p-agent-header', lib: 'anthropic.js', args: ['--max', '2', '--header', 'X-TokenBudget-Agent: hdragent'],
            want: {usage: ANTH_USAGE(I, 2), n: 2}, charge: I + 2, agent: 'hdragent'},
];

async function runCase(nodeModules, ctx, c) {
        const where = ctx[c.up || 'openai'];
        const args = [...c.args, '--base', `http://${where.proxy}`, '--header', `X-Test-Case: ${c.name}`];
        const res = await runClient(nodeModules, c.lib, args);
        if (!res.result) return [`${c.lib} exited ${res.code} without a result line: ${res.stdout}${res.stderr}`];
        const r = res.result;
        const bad = compare(c, r);
        if ((r.error ? 3 : 0) !== res.code) bad.push(`exit status ${res.code}`);
        const rec = where.upstream ? await recordOf(where.upstream, c.name, Boolean(c.record && c.record.client_closed))
                                   : undefined;
        bad.push(...compareRecord(c, rec));
        if (rec && c.check && !r.error) bad.push(...c.check(rec, r));
        const {used, scope} = await settled(ctx.sock, `process:${r.pid}`);
        if (!scope && c.charge !== 0)
                bad.push(`the daemon has no scope process:${r.pid}: the proxy did not charge the client's process`);
        let want = c.charge;
        if (c.chargeFrom && rec) want = c.chargeFrom(rec);
        if (want !== undefined && used !== want) bad.push(`the daemon charged process:${r.pid} ${used}, expected ${want}`);
        if (c.chargeRange && !(used >= c.chargeRange[0] && used <= c.chargeRange[1]))
                bad.push(`the daemon charged ${used}, expected ${c.chargeRange[0]} to ${c.chargeRange[1]}`);
        // Cut when the allocation reached its hard limit: charged exactly
        // that, every token delivered within it.
        if (c.cut && !(used === hardLimit(c.cut) && r.deltas < used))
                bad.push(`the daemon charged ${used} for ${r.deltas} tokens delivered, expected the hard limit ${
                        hardLimit(c.cut)}`);
        if (c.agent) {
                const a = await settled(ctx.sock, `agent:${process.getuid()}:${c.agent}`);
                if (a.used !== want) bad.push(`agent:${process.getuid()}:${c.agent} charged ${a.used}, expected ${want}`);
        }
        if (bad.length) bad.push(`(result: ${res.stdout.trim()})`);
        return bad;
}

function waitSocket(sock, daemon) {
        return new Promise((resolve, reject) => {
                let tries = 0;
                const attempt = () => {
                        const s = net.connect(sock);
                        s.on('connect', () => {
                                s.destroy();
                                resolve();
                        });
                        s.on('error', () => {
                                if (++tries > 200 || daemon.exitCode !== null)
                                        return reject(new Error(`tokenbudgetd is not listening on ${sock}`));
                                setTimeout(attempt, 25);
                        });
                };
                attempt();
        });
}

// A loopback port nothing listens on (bound, then closed).
function closedPort() {
        return new Promise((resolve, reject) => {
                const srv = net.createServer();
                srv.on('error', reject);
                srv.listen(0, '127.0.0.1', () => {
                        const port = srv.address().port;
                        srv.close(() => resolve(port));
                });
        });
}

// SIGTERM, then its exit code (or signal name); SIGKILL after 10 s.
function stop(p) {
        return new Promise((resolve) => {
                if (p.exitCode !== null || p.signalCode !== null) return resolve(p.exitCode ?? p.signalCode);
                const timer = setTimeout(() => p.kill('SIGKILL'), 10000);
                p.once('exit', (code, sig) => {
                        clearTimeout(timer);
                        resolve(code ?? sig);
                });
                p.kill('SIGTERM');
        });
}

async function main() {
        const proxyBin = env('TOKENBUDGET_PROXY');
        const nodeModules = installLibraries();
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-proxy-clients-'));
        const sock = path.join(dir, 'tokenbudget.sock');
        fs.writeFileSync(path.join(dir, 'tokenbudgetd.conf'), daemonConfig());
        const daemonLog = fs.openSync(path.join(dir, 'tokenbudgetd.log'), 'w');
        const daemon = spawn(env('TOKENBUDGETD'),
            ['--config', path.join(dir, 'tokenbudgetd.conf'), '--socket', sock, '--state-dir', ''],
            {stdio: ['ignore', daemonLog, daemonLog]});
        const procs = [[daemon, 'tokenbudgetd']];
        let failed = 0;
        try {
                await waitSocket(sock, daemon);
                const up = await startUpstream(['--listen', '0']);
                const upOllama = await startUpstream(['--listen', '0', '--flavor', 'ollama']);
                procs.push([up.proc, 'upstream.js'], [upOllama.proc, 'upstream.js --flavor ollama']);
                const proxy = await startListening([proxyBin, '--listen', '127.0.0.1:0', '--upstream', `http://${up.address}`,
                        '--socket', sock], 'tokenbudget-proxy');
                const proxyOllama = await startListening([proxyBin, '--listen', '127.0.0.1:0', '--upstream',
                        `http://${upOllama.address}`, '--api', 'ollama', '--socket', sock], 'tokenbudget-proxy --api ollama');
                procs.push([proxy.proc, 'tokenbudget-proxy'], [proxyOllama.proc, 'tokenbudget-proxy --api ollama']);
                // In front of a port nobody listens on; and with no daemon.
                const proxyDown = await startListening([proxyBin, '--listen', '127.0.0.1:0', '--upstream',
                        `http://127.0.0.1:${await closedPort()}`, '--socket', sock], 'tokenbudget-proxy (upstream down)');
                const proxyNoDaemon = await startListening([proxyBin, '--listen', '127.0.0.1:0', '--upstream',
                        `http://${up.address}`, '--socket', path.join(dir, 'no-daemon.sock')],
                    'tokenbudget-proxy (no daemon)');
                procs.push([proxyDown.proc, 'tokenbudget-proxy (upstream down)'],
                    [proxyNoDaemon.proc, 'tokenbudget-proxy (no daemon)']);
                const ctx = {sock, openai: {proxy: proxy.address, upstream: up.address},
                        ollama: {proxy: proxyOllama.address, upstream: upOllama.address},
                        down: {proxy: proxyDown.address, upstream: null},
                        nodaemon: {proxy: proxyNoDaemon.address, upstream: null}};
                failed = await runCases(CASES, (c) => runCase(nodeModules, ctx, c));
                for (const p of [proxy, proxyOllama])
                        if (p.proc.exitCode !== null) {
                                failed++;
                                process.stdout.write(`not ok: tokenbudget-proxy exited ${p.proc.exitCode}: ${p.output()}\n`);
                        }
                if (failed)
                        process.stdout.write(`tokenbudget-proxy's log:\n${proxy.output()}\n--api ollama:\n${
                                proxyOllama.output()}\n`);
        } finally {
                // A clean stop: each exits 0 on SIGTERM (under AddressSanitizer
                // a leak or an error found at exit makes it fail).
                for (const [p, what] of procs.reverse()) {
                        const code = await stop(p);
                        if (code !== 0) {
                                failed++;
                                process.stdout.write(`not ok: ${what} exited ${code} on SIGTERM\n`);
                        }
                }
                if (failed) process.stdout.write(`tokenbudgetd's log:\n${fs.readFileSync(path.join(dir, 'tokenbudgetd.log'), 'utf8')}\n`);
                fs.rmSync(dir, {recursive: true, force: true});
        }
        process.stdout.write(`node ${process.version}; ${CASES.length - failed}/${CASES.length} cases passed\n`);
        process.exit(failed ? 1 : 0);
}

main().catch((e) => fail(e.stack || String(e)));
