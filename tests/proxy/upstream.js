#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// A test upstream for tokenbudget-proxy: one HTTP server that answers each
// model API the way the real servers do, streamed and not, with
// deterministic token counts, so that a test knows the exact usage to expect
// and sees the proxy's clamping in what it forwarded. Node's http module
// only: no npm packages. It is not a model: the reply is "tok1 tok2 ..."
// and a token is a word.
//
//   OpenAI   POST /v1/chat/completions, /v1/completions, /v1/responses
//            (SSE "data: {...}" chunks ending "data: [DONE]"; the usage chunk
//            with choices [] only when stream_options.include_usage is true;
//            Responses: "event: response.*" events ending response.completed
//            or response.incomplete with the usage in response.usage)
//   Ollama   POST /api/chat, /api/generate (NDJSON, streamed unless
//            "stream": false; counts only in the final done:true object;
//            fields that are zero are omitted, as Go's omitempty does; an empty
//            prompt or no messages is done_reason "load" with no counts)
//   Anthropic POST /v1/messages (SSE: message_start, content_block_start,
//            ping, content_block_delta..., content_block_stop, message_delta
//            with cumulative usage, message_stop)
//
// The max-output field each API honours (as ../../../shared/PROXY-NOTES.md):
// OpenAI chat max_completion_tokens, else the deprecated max_tokens;
// completions max_tokens (16 when absent, OpenAI's default); Responses
// max_output_tokens (at least 16, else 400 as OpenAI answers); Anthropic
// max_tokens (required); Ollama native options.num_predict (negative: no
// limit); with --flavor ollama the /v1 endpoints honour max_tokens and ignore
// max_completion_tokens (ollama#7125); --flavor llamacpp: n_predict >
// max_completion_tokens > max_tokens, and llama.cpp's "timings" on the last
// chunk (and in a whole reply) always.
//
// Output tokens N = min(that field, target), the target from the request
// header X-Test-Output-Tokens (default 50). Stop reason: the limit's
// ("length", "max_tokens", status "incomplete") when the field is below the
// target, else the natural one ("stop", "end_turn", "completed").
// Input tokens: X-Test-Input-Tokens, else the words of the prompt text (at
// least 1); X-Test-Cache-Read-Tokens and X-Test-Cache-Creation-Tokens add
// cached input: Anthropic reports the three apart (input_tokens excludes
// them), OpenAI's prompt_tokens/input_tokens include them with the read part
// as cached_tokens, Ollama's prompt_eval_count is their sum.
// Other request headers: X-Test-Delay-Ms (between stream chunks, default 0);
// X-Test-Status: STATUS (answer that error in the API's shape; 429 with
// Retry-After: 1); X-Test-Abort-After: K (drop the connection after K output
// tokens, or before a whole reply); X-Test-Timings: 1 (llama.cpp timings in
// any flavor); X-Test-No-Usage: 1 (no usage at all, as an upstream without
// it: no usage object, no usage chunk, no Ollama counts, Anthropic's
// message_delta without usage); X-Test-Ignore-Max: 1 (no max-output field is
// honoured: a server that runs past the grant, for the proxy to cut);
// X-Test-Flavor: per request.
//
// GET /__requests: every request received, in order, as JSON (method, path,
// headers, body parsed or raw, and what was sent back: input and output
// tokens, the stop reason, how many output tokens went out and whether the
// client closed the connection first); DELETE /__requests clears them.
//
// Usage: node upstream.js --listen PORT|HOST:PORT|/unix/path
//                         [--flavor openai|ollama|llamacpp]
// Prints "listening on ADDRESS" (the port chosen when PORT is 0) when ready.
'use strict';

const http = require('http');
const fs = require('fs');

const DEFAULT_TARGET = 50;
const COMPLETIONS_DEFAULT_MAX = 16; // OpenAI /v1/completions: max_tokens defaults to 16
const RESPONSES_MIN_MAX_OUTPUT = 16; // OpenAI /v1/responses: max_output_tokens >= 16
const FLAVORS = ['openai', 'ollama', 'llamacpp'];
const MAX_BODY = 64 << 20;

let defaultFlavor = 'openai';
let seq = 0;
const requests = [];

// ---- small helpers -------------------------------------------------------

function words(text) {
        if (typeof text !== 'string') return 0;
        return text.split(/\s+/).filter((w) => w.length > 0).length;
}

// The words of a content value: a string, or an array of parts with text.
function contentWords(content) {
        if (typeof content === 'string') return words(content);
        if (!Array.isArray(content)) return 0;
        let n = 0;
        for (const part of content) {
                if (typeof part === 'string') n += words(part);
                else if (part && typeof part === 'object') {
                        if (typeof part.text === 'string') n += words(part.text);
                        else if (part.content !== undefined) n += contentWords(part.content);
                }
        }
        return n;
}

function messagesWords(messages) {
        if (!Array.isArray(messages)) return 0;
        let n = 0;
        for (const m of messages) if (m && typeof m === 'object') n += contentWords(m.content);
        return n;
}

function headerInt(req, name) {
        const v = req.headers[name.toLowerCase()];
        if (v === undefined) return undefined;
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) throw new Error(`header ${name}: not a non-negative integer: ${v}`);
        return n;
}

function isInt(v) {
        return typeof v === 'number' && Number.isInteger(v);
}

function randomId(prefix) {
        seq++;
        return `${prefix}${Date.now().toString(36)}${seq.toString(36).padStart(6, '0')}`;
}

function tokenText(i) {
        return i === 0 ? 'tok1' : ` tok${i + 1}`;
}

function fullText(n) {
        let s = '';
        for (let i = 0; i < n; i++) s += tokenText(i);
        return s;
}

function sleep(ms) {
        return new Promise((resolve) => setTimeout(resolve, ms));
}

function nowSec() {
        return Math.floor(Date.now() / 1000);
}

// ---- errors in each API's shape -------------------------------------------

const OPENAI_ERROR_TYPES = {
        400: ['invalid_request_error', null],
        401: ['invalid_request_error', 'invalid_api_key'],
        404: ['invalid_request_error', 'model_not_found'],
        413: ['invalid_request_error', null],
        429: ['requests', 'rate_limit_exceeded'],
        500: ['server_error', null],
        502: ['server_error', null],
        503: ['server_error', null],
};
const ANTHROPIC_ERROR_TYPES = {
        400: 'invalid_request_error',
        401: 'authentication_error',
        403: 'permission_error',
        404: 'not_found_error',
        413: 'request_too_large',
        429: 'rate_limit_error',
        500: 'api_error',
        529: 'overloaded_error',
};

function errorBody(api, status, message, param) {
        if (api === 'anthropic')
                return {type: 'error', error: {type: ANTHROPIC_ERROR_TYPES[status] || 'api_error', message}};
        if (api === 'ollama') return {error: message};
        const [type, code] = OPENAI_ERROR_TYPES[status] || ['server_error', null];
        return {error: {message, type, param: param === undefined ? null : param, code}};
}

class RequestError extends Error {
        constructor(status, message, param) {
                super(message);
                this.status = status;
                this.param = param;
        }
}

// ---- what a request asks for ---------------------------------------------

// Returns {limit (or Infinity), input words} for an endpoint, or throws a
// RequestError as that API would answer it.
const ENDPOINTS = {
        '/v1/chat/completions': {api: 'openai', kind: 'chat', parse: parseOpenAIChat},
        '/v1/completions': {api: 'openai', kind: 'completions', parse: parseOpenAICompletions},
        '/v1/responses': {api: 'openai', kind: 'responses', parse: parseOpenAIResponses},
        '/api/chat': {api: 'ollama', kind: 'chat', parse: parseOllama},
        '/api/generate': {api: 'ollama', kind: 'generate', parse: parseOllama},
        '/v1/messages': {api: 'anthropic', kind: 'messages', parse: parseAnthropic},
};

function requireModel(b) {
        if (typeof b.model !== 'string' || b.model === '')
                throw new RequestError(400, 'you must provide a model parameter', 'model');
}

function checkLimit(name, v, min) {
        if (v === undefined || v === null) return undefined;
        if (!isInt(v)) throw new RequestError(400, `Invalid type for '${name}': expected an integer.`, name);
        if (v < min)
                throw new RequestError(400,
                    `Invalid '${name}': integer below minimum value. Expected a value >= ${min}, but got ${v} instead.`,
                    name);
        return v;
}

function openAIStreamOptions(b) {
        if (b.stream_options !== undefined && b.stream_options !== null) {
                if (typeof b.stream_options !== 'object' || Array.isArray(b.stream_options))
                        throw new RequestError(400, "Invalid type for 'stream_options'", 'stream_options');
                if (b.stream !== true)
                        throw new RequestError(400,
                            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                            'stream_options');
        }
        return b.stream_options && b.stream_options.include_usage === true;
}

function parseOpenAIChat(b, flavor) {
        requireModel(b);
        if (!Array.isArray(b.messages) || b.messages.length === 0)
                throw new RequestError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                    'messages');
        let limit;
        const mct = checkLimit('max_completion_tokens', b.max_completion_tokens, 1);
        const mt = checkLimit('max_tokens', b.max_tokens, 1);
        if (flavor === 'ollama') limit = mt; // max_completion_tokens is ignored (ollama#7125)
        else if (flavor === 'llamacpp') limit = isInt(b.n_predict) && b.n_predict >= 0 ? b.n_predict : mct ?? mt;
        else limit = mct ?? mt;
        return {limit, inputWords: messagesWords(b.messages), stream: b.stream === true,
            includeUsage: openAIStreamOptions(b)};
}

function parseOpenAICompletions(b, flavor) {
        requireModel(b);
        if (b.prompt === undefined) throw new RequestError(400, 'you must provide a prompt parameter', 'prompt');
        let limit = checkLimit('max_tokens', b.max_tokens, 0);
        if (flavor === 'llamacpp' && isInt(b.n_predict) && b.n_predict >= 0) limit = b.n_predict;
        if (limit === undefined && flavor === 'openai') limit = COMPLETIONS_DEFAULT_MAX;
        const prompt = Array.isArray(b.prompt) ? b.prompt.join(' ') : b.prompt;
        return {limit, inputWords: words(prompt), stream: b.stream === true, includeUsage: openAIStreamOptions(b)};
}

function parseOpenAIResponses(b, flavor) {
        requireModel(b);
        if (b.input === undefined) throw new RequestError(400, "Missing required parameter: 'input'.", 'input');
        const limit = checkLimit('max_output_tokens', b.max_output_tokens,
            flavor === 'openai' ? RESPONSES_MIN_MAX_OUTPUT : 1);
        let n = typeof b.input === 'string' ? words(b.input) : messagesWords(b.input);
        n += words(b.instructions);
        return {limit, inputWords: n, stream: b.stream === true, includeUsage: false};
}

function parseOllama(b, flavor, ep) {
        if (typeof b.model !== 'string' || b.model === '') throw new RequestError(400, 'model is required');
        let limit;
        if (b.options !== undefined && b.options !== null) {
                if (typeof b.options !== 'object' || Array.isArray(b.options))
                        throw new RequestError(400, 'json: cannot unmarshal options');
                const np = b.options.num_predict;
                if (np !== undefined && !isInt(np))
                        throw new RequestError(400, 'option "num_predict" must be of type integer');
                if (isInt(np) && np >= 0) limit = np; // -1: no limit, -2: fill the context
        }
        let inputWords, load;
        if (ep.kind === 'chat') {
                if (b.messages !== undefined && b.messages !== null && !Array.isArray(b.messages))
                        throw new RequestError(400, 'json: cannot unmarshal messages');
                load = !Array.isArray(b.messages) || b.messages.length === 0;
                inputWords = messagesWords(b.messages);
        } else {
                load = typeof b.prompt !== 'string' || b.prompt === '';
                inputWords = words(b.prompt) + words(b.system);
        }
        return {limit, inputWords, stream: b.stream !== false, includeUsage: false, load};
}

function parseAnthropic(b) {
        if (typeof b.model !== 'string' || b.model === '')
                throw new RequestError(400, 'model: Field required');
        if (b.max_tokens === undefined) throw new RequestError(400, 'max_tokens: Field required');
        if (!isInt(b.max_tokens) || b.max_tokens < 0)
                throw new RequestError(400, 'max_tokens: Input should be a valid integer, at least 0');
        if (!Array.isArray(b.messages)) throw new RequestError(400, 'messages: Field required');
        let n = messagesWords(b.messages);
        n += typeof b.system === 'string' ? words(b.system) : contentWords(b.system);
        return {limit: b.max_tokens, inputWords: n, stream: b.stream === true, includeUsage: false};
}

// ---- the plan for one reply -----------------------------------------------

function plan(req, ep, body, flavor) {
        const p = ep.parse(body, flavor, ep);
        const target = headerInt(req, 'X-Test-Output-Tokens') ?? DEFAULT_TARGET;
        if (req.headers['x-test-ignore-max'] === '1') p.limit = undefined;
        const limited = p.limit !== undefined && p.limit < target;
        const output = p.load ? 0 : limited ? p.limit : target;
        const inputHeader = headerInt(req, 'X-Test-Input-Tokens');
        const input = p.load ? 0 : inputHeader ?? Math.max(1, p.inputWords);
        return {
                ...p,
                kind: ep.kind,
                flavor,
                model: body.model,
                output,
                limited: limited && !p.load,
                input,
                cacheRead: p.load ? 0 : headerInt(req, 'X-Test-Cache-Read-Tokens') ?? 0,
                cacheCreation: p.load ? 0 : headerInt(req, 'X-Test-Cache-Creation-Tokens') ?? 0,
                delayMs: headerInt(req, 'X-Test-Delay-Ms') ?? 0,
                abortAfter: headerInt(req, 'X-Test-Abort-After'),
                timings: flavor === 'llamacpp' || req.headers['x-test-timings'] === '1',
                noUsage: req.headers['x-test-no-usage'] === '1',
                created: nowSec(),
                startNs: process.hrtime.bigint(),
        };
}

function totalInput(p) {
        return p.input + p.cacheRead + p.cacheCreation;
}

function timings(p) {
        const promptN = p.input + p.cacheCreation;
        return {
                cache_n: p.cacheRead,
                prompt_n: promptN,
                prompt_ms: promptN * 0.25,
                prompt_per_token_ms: 0.25,
                prompt_per_second: 4000,
                predicted_n: p.output,
                predicted_ms: p.output * 10,
                predicted_per_token_ms: 10,
                predicted_per_second: 100,
        };
}

function openAIUsage(p, kind) {
        const prompt = totalInput(p);
        if (kind === 'responses')
                return {
                        input_tokens: prompt,
                        input_tokens_details: {cached_tokens: p.cacheRead},
                        output_tokens: p.output,
                        output_tokens_details: {reasoning_tokens: 0},
                        total_tokens: prompt + p.output,
                };
        const u = {prompt_tokens: prompt, completion_tokens: p.output, total_tokens: prompt + p.output};
        if (p.flavor === 'openai') {
                u.prompt_tokens_details = {cached_tokens: p.cacheRead, audio_tokens: 0};
                u.completion_tokens_details = {reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0,
                    rejected_prediction_tokens: 0};
        }
        return u;
}

function anthropicUsage(p, output) {
        return {
                input_tokens: p.input,
                cache_creation_input_tokens: p.cacheCreation,
                cache_read_input_tokens: p.cacheRead,
                output_tokens: output,
                service_tier: 'standard',
        };
}

// ---- writing a stream ------------------------------------------------------

// Writes each piece of a stream in turn: pieces is an array of
// {text, token: bool}; output tokens are counted in rec.sent. Honours the
// delay between token pieces, the abort point and backpressure; stops when the
// client went away.
async function writeStream(res, rec, p, pieces) {
        for (const piece of pieces) {
                if (rec.client_closed) return;
                if (piece.token) {
                        if (p.abortAfter !== undefined && rec.sent >= p.abortAfter) {
                                rec.aborted = true;
                                res.socket.destroy();
                                return;
                        }
                        if (rec.sent > 0 && p.delayMs > 0) await sleep(p.delayMs);
                        if (rec.client_closed) return;
                }
                const more = res.write(piece.text);
                if (piece.token) rec.sent++;
                if (!more) await new Promise((resolve) => res.once('drain', resolve).once('close', resolve));
        }
        if (!rec.client_closed) res.end();
}

function sse(obj, event) {
        return (event ? `event: ${event}\n` : '') + `data: ${JSON.stringify(obj)}\n\n`;
}

function startStream(res, contentType, extraHeaders) {
        res.writeHead(200, {'Content-Type': contentType, 'Cache-Control': 'no-cache', ...extraHeaders});
        res.flushHeaders();
}

// ---- OpenAI chat and completions -------------------------------------------

function openAIFinish(p) {
        return p.limited ? 'length' : 'stop';
}

function openAIChatWhole(p, kind) {
        const id = randomId(kind === 'chat' ? 'chatcmpl-' : 'cmpl-');
        const text = fullText(p.output);
        const choice = kind === 'chat' ? {
                index: 0,
                message: {role: 'assistant', content: text, refusal: null, annotations: []},
                logprobs: null,
                finish_reason: openAIFinish(p),
        } : {text, index: 0, logprobs: null, finish_reason: openAIFinish(p)};
        const body = {
                id,
                object: kind === 'chat' ? 'chat.completion' : 'text_completion',
                created: p.created,
                model: p.model,
                choices: [choice],
        };
        if (!p.noUsage) body.usage = openAIUsage(p, kind);
        body.system_fingerprint = p.flavor === 'ollama' ? 'fp_ollama' : 'fp_tbtest';
        if (p.timings) body.timings = timings(p);
        return body;
}

function openAIChatPieces(p, kind) {
        const id = randomId(kind === 'chat' ? 'chatcmpl-' : 'cmpl-');
        const base = {
                id,
                object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
                created: p.created,
                model: p.model,
                system_fingerprint: p.flavor === 'ollama' ? 'fp_ollama' : 'fp_tbtest',
        };
        const usageNull = p.includeUsage && !p.noUsage && p.flavor === 'openai';
        const chunk = (choice, extra) => {
                const c = {...base, choices: choice ? [choice] : []};
                if (usageNull) c.usage = null;
                return {...c, ...extra};
        };
        const chatChoice = (delta, finish) => ({index: 0, delta, logprobs: null, finish_reason: finish});
        const textChoice = (text, finish) => ({text, index: 0, logprobs: null, finish_reason: finish});
        const pieces = [];
        if (kind === 'chat' && p.flavor !== 'ollama') {
                // OpenAI's first chunk carries the role and no text; llama.cpp's
                // has content null.
                const first = p.flavor === 'llamacpp' ? {role: 'assistant', content: null}
                                                      : {role: 'assistant', content: '', refusal: null};
                pieces.push({text: sse(chunk(chatChoice(first, null)))});
        }
        for (let i = 0; i < p.output; i++) {
                const t = tokenText(i);
                const delta = kind !== 'chat' ? null
                              : p.flavor === 'ollama' ? {role: 'assistant', content: t} : {content: t};
                pieces.push({text: sse(chunk(delta ? chatChoice(delta, null) : textChoice(t, null))), token: true});
        }
        const finish = openAIFinish(p);
        const lastDelta = p.flavor === 'ollama' ? {role: 'assistant', content: ''} : {};
        const last = chunk(kind === 'chat' ? chatChoice(lastDelta, finish) : textChoice('', finish));
        if (p.timings) last.timings = timings(p);
        pieces.push({text: sse(last)});
        if (p.includeUsage && !p.noUsage) pieces.push({text: sse(chunk(null, {usage: openAIUsage(p, kind)}))});
        pieces.push({text: 'data: [DONE]\n\n'});
        return pieces;
}

// ---- OpenAI Responses -------------------------------------------------------

function responseObject(p, id, msgId, status, text) {
        const done = status !== 'in_progress';
        const output = done ? [{
                id: msgId,
                type: 'message',
                status: status === 'completed' ? 'completed' : 'incomplete',
                role: 'assistant',
                content: [{type: 'output_text', annotations: [], logprobs: [], text}],
        }] : [];
        return {
                id,
                object: 'response',
                created_at: p.created,
                status,
                background: false,
                error: null,
                incomplete_details: status === 'incomplete' ? {reason: 'max_output_tokens'} : null,
                instructions: null,
                max_output_tokens: p.limit ?? null,
                model: p.model,
                output,
                parallel_tool_calls: true,
                previous_response_id: null,
                reasoning: {effort: null, summary: null},
                store: true,
                temperature: 1.0,
                text: {format: {type: 'text'}},
                tool_choice: 'auto',
                tools: [],
                top_p: 1.0,
                truncation: 'disabled',
                usage: done && !p.noUsage ? openAIUsage(p, 'responses') : null,
                user: null,
                metadata: {},
        };
}

function responsesStatus(p) {
        return p.limited ? 'incomplete' : 'completed';
}

function responsesWhole(p) {
        const r = responseObject(p, randomId('resp_'), randomId('msg_'), responsesStatus(p), fullText(p.output));
        if (p.noUsage) delete r.usage;
        return r;
}

function responsesPieces(p) {
        const id = randomId('resp_');
        const msgId = randomId('msg_');
        let n = 0;
        const ev = (type, fields) => sse({type, sequence_number: n++, ...fields}, type);
        const item = (status, content) => ({id: msgId, type: 'message', status, role: 'assistant', content});
        const part = (text) => ({type: 'output_text', annotations: [], logprobs: [], text});
        const text = fullText(p.output);
        const pieces = [
                {text: ev('response.created', {response: responseObject(p, id, msgId, 'in_progress', '')})},
                {text: ev('response.in_progress', {response: responseObject(p, id, msgId, 'in_progress', '')})},
                {text: ev('response.output_item.added', {output_index: 0, item: item('in_progress', [])})},
                {text: ev('response.content_part.added',
                     {item_id: msgId, output_index: 0, content_index: 0, part: part('')})},
        ];
        for (let i = 0; i < p.output; i++)
                pieces.push({
                        text: ev('response.output_text.delta',
                            {item_id: msgId, output_index: 0, content_index: 0, delta: tokenText(i), logprobs: []}),
                        token: true,
                });
        const status = responsesStatus(p);
        pieces.push(
            {text: ev('response.output_text.done',
                 {item_id: msgId, output_index: 0, content_index: 0, text, logprobs: []})},
            {text: ev('response.content_part.done',
                 {item_id: msgId, output_index: 0, content_index: 0, part: part(text)})},
            {text: ev('response.output_item.done',
                 {output_index: 0, item: item(status === 'completed' ? 'completed' : 'incomplete', [part(text)])})},
            {text: ev(`response.${status}`, {response: responseObject(p, id, msgId, status, text)})});
        return pieces;
}

// ---- Ollama native ------------------------------------------------------------

function ollamaTime() {
        // Go's time.Time marshals with nanoseconds; JavaScript has milliseconds.
        return new Date().toISOString().replace('Z', '000000Z');
}

// The final object's fields after the content: Go's omitempty drops zeros.
function ollamaFinal(p, obj) {
        obj.done = true;
        if (p.load) {
                obj.done_reason = 'load';
                return obj;
        }
        obj.done_reason = p.limited ? 'length' : 'stop';
        const elapsed = Number(process.hrtime.bigint() - p.startNs);
        const counts = {
                total_duration: Math.max(1, elapsed),
                load_duration: 1000,
                prompt_eval_count: p.noUsage ? 0 : totalInput(p),
                prompt_eval_duration: p.noUsage ? 0 : 250000 * totalInput(p),
                eval_count: p.noUsage ? 0 : p.output,
                eval_duration: p.noUsage ? 0 : 10000000 * p.output,
        };
        if (p.kind === 'generate' && !p.noUsage) {
                // The deprecated context (token ids) still sent by /api/generate.
                const ctx = [];
                for (let i = 0; i < totalInput(p) + p.output; i++) ctx.push(1000 + i);
                if (ctx.length) obj.context = ctx;
        }
        for (const [k, v] of Object.entries(counts)) if (v !== 0) obj[k] = v;
        return obj;
}

function ollamaMessage(p, content) {
        const o = {model: p.model, created_at: ollamaTime()};
        if (p.kind === 'chat') o.message = {role: 'assistant', content};
        else o.response = content;
        return o;
}

function ollamaWhole(p) {
        return ollamaFinal(p, {...ollamaMessage(p, fullText(p.output))});
}

function ollamaPieces(p) {
        const pieces = [];
        for (let i = 0; i < p.output; i++)
                pieces.push({text: JSON.stringify({...ollamaMessage(p, tokenText(i)), done: false}) + '\n', token: true});
        pieces.push({text: JSON.stringify(ollamaFinal(p, ollamaMessage(p, ''))) + '\n'});
        return pieces;
}

// ---- Anthropic ----------------------------------------------------------------

function anthropicStop(p) {
        return p.limited ? 'max_tokens' : 'end_turn';
}

function anthropicWhole(p) {
        const body = {
                id: randomId('msg_'),
                type: 'message',
                role: 'assistant',
                model: p.model,
                content: p.output ? [{type: 'text', text: fullText(p.output)}] : [],
                stop_reason: anthropicStop(p),
                stop_sequence: null,
        };
        if (!p.noUsage) body.usage = anthropicUsage(p, p.output);
        return body;
}

function anthropicPieces(p) {
        const message = {
                id: randomId('msg_'),
                type: 'message',
                role: 'assistant',
                model: p.model,
                content: [],
                stop_reason: null,
                stop_sequence: null,
                usage: anthropicUsage(p, p.noUsage ? 0 : 1), // a placeholder, as the API sends
        };
        const ev = (type, fields) => sse({type, ...fields}, type);
        const pieces = [{text: ev('message_start', {message})}];
        if (p.output > 0) {
                pieces.push({text: ev('content_block_start', {index: 0, content_block: {type: 'text', text: ''}})});
                pieces.push({text: 'event: ping\ndata: {"type": "ping"}\n\n'});
                for (let i = 0; i < p.output; i++)
                        pieces.push({
                                text: ev('content_block_delta',
                                    {index: 0, delta: {type: 'text_delta', text: tokenText(i)}}),
                                token: true,
                        });
                pieces.push({text: ev('content_block_stop', {index: 0})});
        }
        const delta = {delta: {stop_reason: anthropicStop(p), stop_sequence: null}};
        if (!p.noUsage) {
                const u = anthropicUsage(p, p.output);
                delete u.service_tier;
                delta.usage = u; // cumulative: the whole message's counts
        } else {
                delta.usage = {output_tokens: 0};
        }
        pieces.push({text: ev('message_delta', delta)}, {text: ev('message_stop', {})});
        return pieces;
}

// ---- dispatch -------------------------------------------------------------------

const REPLIES = {
        openai: {
                chat: {whole: (p) => openAIChatWhole(p, 'chat'), pieces: (p) => openAIChatPieces(p, 'chat'),
                    type: 'text/event-stream; charset=utf-8'},
                completions: {whole: (p) => openAIChatWhole(p, 'completions'),
                    pieces: (p) => openAIChatPieces(p, 'completions'), type: 'text/event-stream; charset=utf-8'},
                responses: {whole: responsesWhole, pieces: responsesPieces, type: 'text/event-stream; charset=utf-8'},
        },
        ollama: {
                chat: {whole: ollamaWhole, pieces: ollamaPieces, type: 'application/x-ndjson'},
                generate: {whole: ollamaWhole, pieces: ollamaPieces, type: 'application/x-ndjson'},
        },
        anthropic: {messages: {whole: anthropicWhole, pieces: anthropicPieces, type: 'text/event-stream; charset=utf-8'}},
};

function apiHeaders(api) {
        if (api === 'anthropic') return {'request-id': randomId('req_')};
        if (api === 'openai') return {'x-request-id': randomId('req_')};
        return {};
}

function sendJSON(res, status, obj, extra) {
        const text = JSON.stringify(obj);
        res.writeHead(status, {'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text),
            ...extra});
        res.end(text);
}

function sendError(res, rec, api, status, message, param) {
        rec.status = status;
        const extra = apiHeaders(api);
        if (status === 429) extra['Retry-After'] = '1';
        sendJSON(res, status, errorBody(api, status, message, param), extra);
}

async function handleApi(req, res, ep, rec, raw) {
        const flavor = req.headers['x-test-flavor'] || defaultFlavor;
        if (!FLAVORS.includes(flavor)) return sendError(res, rec, ep.api, 400, `unknown X-Test-Flavor ${flavor}`);
        const forced = headerInt(req, 'X-Test-Status');
        if (forced !== undefined && forced >= 400) {
                const what = forced === 429 ? 'Rate limit reached (test upstream, X-Test-Status)'
                                            : `test upstream: X-Test-Status ${forced}`;
                return sendError(res, rec, ep.api, forced, what);
        }
        let body;
        try {
                body = JSON.parse(raw);
        } catch (e) {
                const msg = ep.api === 'ollama' ? `invalid character in request body: ${e.message}`
                            : `We could not parse the JSON body of your request. (${e.message})`;
                return sendError(res, rec, ep.api, 400, msg);
        }
        if (!body || typeof body !== 'object' || Array.isArray(body))
                return sendError(res, rec, ep.api, 400, 'the request body must be a JSON object');
        let p;
        try {
                p = plan(req, ep, body, flavor);
        } catch (e) {
                if (e instanceof RequestError) return sendError(res, rec, ep.api, e.status, e.message, e.param);
                return sendError(res, rec, ep.api, 400, e.message);
        }
        const reply = REPLIES[ep.api][ep.kind];
        rec.reply = {input_tokens: totalInput(p), output_tokens: p.output, limited: p.limited, stream: p.stream,
            flavor};
        rec.status = 200;
        if (!p.stream) {
                if (p.abortAfter !== undefined) {
                        rec.aborted = true;
                        return res.socket.destroy();
                }
                const whole = reply.whole(p);
                rec.sent = p.output;
                return sendJSON(res, 200, whole, apiHeaders(ep.api));
        }
        startStream(res, reply.type, apiHeaders(ep.api));
        await writeStream(res, rec, p, reply.pieces(p));
}

function readBody(req) {
        return new Promise((resolve, reject) => {
                const chunks = [];
                let len = 0;
                req.on('data', (c) => {
                        len += c.length;
                        if (len > MAX_BODY) {
                                reject(new RequestError(413, 'request body too large'));
                                req.destroy();
                                return;
                        }
                        chunks.push(c);
                });
                req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
                req.on('error', reject);
        });
}

async function handle(req, res) {
        const url = new URL(req.url, 'http://upstream');
        if (url.pathname === '/__requests') {
                if (req.method === 'DELETE') requests.length = 0;
                return sendJSON(res, 200, req.method === 'DELETE' ? [] : requests);
        }
        const raw = await readBody(req);
        let parsed = null;
        try {
                parsed = JSON.parse(raw);
        } catch (e) {
                parsed = null;
        }
        const rec = {
                seq: requests.length + 1,
                method: req.method,
                path: url.pathname,
                query: url.search,
                headers: req.headers,
                body: parsed,
                raw: parsed === null ? raw : undefined,
                status: null,
                reply: null,
                sent: 0,
                client_closed: false,
                aborted: false,
        };
        requests.push(rec);
        res.on('close', () => {
                if (!res.writableFinished && !rec.aborted) rec.client_closed = true;
        });
        const ep = ENDPOINTS[url.pathname];
        if (!ep) {
                rec.status = 404;
                return sendJSON(res, 404, {error: {message: `no route for ${req.method} ${url.pathname}`}});
        }
        if (req.method !== 'POST') return sendError(res, rec, ep.api, 405, `method ${req.method} not allowed`);
        await handleApi(req, res, ep, rec, raw);
}

// ---- main ------------------------------------------------------------------------

function usage(msg) {
        if (msg) process.stderr.write(`upstream.js: ${msg}\n`);
        process.stderr.write('usage: node upstream.js --listen PORT|HOST:PORT|/unix/path [--flavor openai|ollama|llamacpp]\n');
        process.exit(2);
}

function main(argv) {
        let listen;
        for (let i = 0; i < argv.length; i++) {
                if (argv[i] === '--listen' && i + 1 < argv.length) listen = argv[++i];
                else if (argv[i] === '--flavor' && i + 1 < argv.length) defaultFlavor = argv[++i];
                else usage(`unknown argument ${argv[i]}`);
        }
        if (!listen) usage('--listen is required');
        if (!FLAVORS.includes(defaultFlavor)) usage(`unknown flavor ${defaultFlavor}`);
        const server = http.createServer((req, res) => {
                req.socket.setNoDelay(true);
                handle(req, res).catch((e) => {
                        process.stderr.write(`upstream.js: ${req.method} ${req.url}: ${e.stack || e}\n`);
                        if (!res.headersSent) sendJSON(res, e.status || 500, {error: String(e.message || e)});
                        else res.destroy();
                });
        });
        server.keepAliveTimeout = 30000;
        const ready = () => {
                const a = server.address();
                const where = typeof a === 'string' ? a : `${a.address}:${a.port}`;
                process.stdout.write(`listening on ${where}\n`);
        };
        server.on('error', (e) => {
                process.stderr.write(`upstream.js: ${e.message}\n`);
                process.exit(1);
        });
        if (listen.includes('/')) {
                try {
                        fs.unlinkSync(listen);
                } catch (e) {
                        if (e.code !== 'ENOENT') throw e;
                }
                server.listen(listen, ready);
        } else {
                const m = /^(?:(.*):)?(\d+)$/.exec(listen);
                if (!m) usage(`--listen ${listen}: not PORT, HOST:PORT or a path`);
                server.listen(Number(m[2]), m[1] || '127.0.0.1', ready);
        }
        for (const sig of ['SIGTERM', 'SIGINT'])
                process.on(sig, () => {
                        server.close();
                        process.exit(0);
                });
}

main(process.argv.slice(2));
