#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// Drives the `@anthropic-ai/sdk` npm library at --base: messages.create(),
// whole, or streamed through messages.stream(), the library's accumulating
// MessageStream (it checks the events' order and takes message_delta's usage
// as cumulative); the usage printed is finalMessage().usage. No retries
// (maxRetries 0): a 429 is printed as the library's RateLimitError.
// --max is max_tokens (default 1024: the API requires it).
'use strict';

const {parseArgs, Deltas, run} = require('./common.js');
const Anthropic = require('@anthropic-ai/sdk');

const o = parseArgs(process.argv.slice(2), ['messages']);
const AnthropicClass = Anthropic.Anthropic || Anthropic.default || Anthropic;
const client = new AnthropicClass({baseURL: o.base, apiKey: o.apiKey, maxRetries: 0, timeout: 30000,
    defaultHeaders: o.headers});

run('@anthropic-ai/sdk', o, async () => {
        const p = {model: o.model, max_tokens: o.max ?? 1024, messages: [{role: 'user', content: o.prompt}]};
        if (!o.stream) {
                const m = await client.messages.create(p);
                return {usage: m.usage, finish: m.stop_reason, text: m.content.map((b) => b.text || '').join('')};
        }
        const d = new Deltas(o.stopAfter);
        const types = [];
        const stream = client.messages.stream(p);
        for await (const ev of stream) {
                types.push(ev.type);
                if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta' && d.add(ev.delta.text)) {
                        stream.abort();
                        return {usage: null, finish: null, text: d.text, deltas: d.count, delta_ms: d.ms, events: types,
                            stopped: true};
                }
        }
        const m = await stream.finalMessage();
        return {usage: m.usage, finish: m.stop_reason, text: d.text, final_text: m.content.map((b) => b.text || '').join(''),
            deltas: d.count, delta_ms: d.ms, events: types};
});
