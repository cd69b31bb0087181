#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// Drives the `openai` npm library at --base (its baseURL is BASE/v1): chat
// completions, completions and the Responses API, whole or streamed, and
// prints what the library reports (common.js has the options and the output).
// Streams go through the library's accumulating helpers where it has them
// (chat.completions.stream(), responses.stream()), which check the events'
// order and shape more strictly than plain iteration: finalChatCompletion()
// throws without a finish_reason, finalResponse() without response.completed.
// No retries (maxRetries 0): a 429 is printed as the library's RateLimitError.
'use strict';

const {parseArgs, Deltas, run} = require('./common.js');
const {OpenAI} = require('openai');

const o = parseArgs(process.argv.slice(2), ['chat', 'completions', 'responses']);
const client = new OpenAI({baseURL: `${o.base}/v1`, apiKey: o.apiKey, maxRetries: 0, timeout: 30000,
    defaultHeaders: o.headers});
const MAX_FIELDS = {chat: 'max_completion_tokens', completions: 'max_tokens', responses: 'max_output_tokens'};

function params() {
        const p = {model: o.model};
        if (o.endpoint === 'chat') p.messages = [{role: 'user', content: o.prompt}];
        else if (o.endpoint === 'completions') p.prompt = o.prompt;
        else p.input = o.prompt;
        if (o.max !== undefined) p[o.maxField || MAX_FIELDS[o.endpoint]] = o.max;
        if (o.stream && o.includeUsage) p.stream_options = {include_usage: true};
        return p;
}

async function chatStream(p) {
        const d = new Deltas(o.stopAfter);
        let usage = null;
        let timings = null;
        let finish = null;
        let chunks = 0;
        const stream = o.endpoint === 'chat' ? client.chat.completions.stream(p)
                                             : await client.completions.create({...p, stream: true});
        for await (const chunk of stream) {
                chunks++;
                if (chunk.usage) usage = chunk.usage;
                if (chunk.timings) timings = chunk.timings;
                const c = chunk.choices && chunk.choices[0];
                if (!c) continue;
                if (c.finish_reason) finish = c.finish_reason;
                if (d.add(o.endpoint === 'chat' ? c.delta && c.delta.content : c.text)) {
                        d.stopped = true;
                        if (o.endpoint === 'chat') stream.abort();
                        else stream.controller.abort();
                        break;
                }
        }
        const r = {usage, finish, text: d.text, deltas: d.count, delta_ms: d.ms, chunks, timings, stopped: d.stopped};
        if (o.endpoint === 'chat' && !d.stopped) {
                const final = await stream.finalChatCompletion();
                r.final_text = final.choices[0].message.content;
                r.final_finish = final.choices[0].finish_reason;
        }
        return r;
}

async function responsesStream(p) {
        const d = new Deltas(o.stopAfter);
        let terminal = null;
        const types = [];
        const stream = client.responses.stream(p);
        for await (const ev of stream) {
                types.push(ev.type);
                if (ev.type === 'response.output_text.delta' && d.add(ev.delta)) {
                        d.stopped = true;
                        stream.abort();
                        break;
                }
                if (['response.completed', 'response.incomplete', 'response.failed'].includes(ev.type))
                        terminal = ev;
        }
        const r = {usage: terminal ? terminal.response.usage : null, finish: terminal ? terminal.response.status : null,
            incomplete_details: terminal ? terminal.response.incomplete_details : null, text: d.text,
            deltas: d.count, delta_ms: d.ms, events: types.length, terminal: terminal && terminal.type,
            stopped: d.stopped};
        if (terminal && terminal.type === 'response.completed') r.final_text = (await stream.finalResponse()).output_text;
        return r;
}

async function whole(p) {
        if (o.endpoint === 'responses') {
                const r = await client.responses.create(p);
                return {usage: r.usage ?? null, finish: r.status, incomplete_details: r.incomplete_details,
                    text: r.output_text};
        }
        const r = o.endpoint === 'chat' ? await client.chat.completions.create(p) : await client.completions.create(p);
        const c = r.choices[0];
        return {usage: r.usage ?? null, finish: c.finish_reason, text: o.endpoint === 'chat' ? c.message.content : c.text,
            timings: r.timings ?? null};
}

run('openai', o, async () => {
        const p = params();
        if (!o.stream) return whole(p);
        return o.endpoint === 'responses' ? responsesStream(p) : chatStream(p);
});
