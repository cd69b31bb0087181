#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// Drives the `ollama` npm library at --base (its host): chat() and
// generate(), whole or streamed (its NDJSON reader; it throws when a stream
// ends without a done:true object). The usage printed is what the final
// object carries: prompt_eval_count, eval_count, done_reason (absent fields
// stay absent). --max is options.num_predict. Ollama's library has no
// rate-limit class: a 429 is its ResponseError with status_code 429.
'use strict';

const {parseArgs, Deltas, run} = require('./common.js');
const {Ollama} = require('ollama');

const o = parseArgs(process.argv.slice(2), ['chat', 'generate']);
const client = new Ollama({host: o.base, headers: o.headers});

function counts(r) {
        const u = {};
        for (const k of ['prompt_eval_count', 'eval_count']) if (r[k] !== undefined) u[k] = r[k];
        return u;
}

run('ollama', o, async () => {
        const p = {model: o.model, stream: o.stream};
        // An empty --prompt: no messages (Ollama answers done_reason "load").
        if (o.endpoint === 'chat') p.messages = o.prompt === '' ? [] : [{role: 'user', content: o.prompt}];
        else p.prompt = o.prompt;
        if (o.max !== undefined) p.options = {num_predict: o.max};
        const call = (q) => (o.endpoint === 'chat' ? client.chat(q) : client.generate(q));
        const piece = (r) => (o.endpoint === 'chat' ? r.message && r.message.content : r.response);
        if (!o.stream) {
                const r = await call(p);
                return {usage: counts(r), finish: r.done_reason ?? null, text: piece(r), done: r.done};
        }
        const d = new Deltas(o.stopAfter);
        let last = null;
        let parts = 0;
        const it = await call(p);
        for await (const r of it) {
                parts++;
                last = r;
                if (d.add(piece(r))) {
                        d.stopped = true;
                        it.abort();
                        break;
                }
        }
        return {usage: last ? counts(last) : null, finish: last ? last.done_reason ?? null : null, text: d.text,
            deltas: d.count, delta_ms: d.ms, parts, done: last ? last.done : null, stopped: d.stopped};
});
