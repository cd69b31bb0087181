// SPDX-License-Identifier: MIT
//
// What the client scripts share: their command line, the JSON line each
// prints (what the library reported: usage, text, how many deltas and when
// they arrived) and how a library's error is printed (its class name and
// status). The libraries come from NODE_PATH (npm-install.sh's directory).
//
//   --base URL          the server root (the proxy's or the upstream's)
//   --endpoint NAME     chat, completions, responses (openai); messages
//                       (anthropic); chat, generate (ollama)
//   --stream            a streamed request
//   --include-usage     OpenAI: stream_options.include_usage = true
//   --max N             the API's max-output field (--max-field to name another)
//   --max-field NAME    e.g. max_tokens for OpenAI chat instead of max_completion_tokens
//   --model M, --prompt TEXT, --api-key KEY
//   --header 'Name: value'   sent with the request (repeatable)
//   --stop-after K      a stream: abort it through the library after K deltas
//                       (the client going away mid-stream)
//
// The result line has the client's pid: the process a proxy charges.
// Exit status: 0 with the result line, 3 with an error line
// {"error": CLASS, "status": N, "message": ...} for an error the library
// raised, 2 for a usage error.
'use strict';

const fs = require('fs');
const path = require('path');

function parseArgs(argv, endpoints) {
        const o = {base: null, endpoint: endpoints[0], stream: false, includeUsage: false, max: undefined,
            maxField: undefined, model: 'test-model', prompt: 'say something short please', apiKey: 'tb-test',
            headers: {}, stopAfter: undefined};
        for (let i = 0; i < argv.length; i++) {
                const a = argv[i];
                const val = () => {
                        if (i + 1 >= argv.length) usage(`${a} needs a value`);
                        return argv[++i];
                };
                if (a === '--base') o.base = val().replace(/\/+$/, '');
                else if (a === '--endpoint') o.endpoint = val();
                else if (a === '--stream') o.stream = true;
                else if (a === '--include-usage') o.includeUsage = true;
                else if (a === '--max') o.max = Number(val());
                else if (a === '--max-field') o.maxField = val();
                else if (a === '--model') o.model = val();
                else if (a === '--prompt') o.prompt = val();
                else if (a === '--api-key') o.apiKey = val();
                else if (a === '--stop-after') o.stopAfter = Number(val());
                else if (a === '--header') {
                        const h = val();
                        const c = h.indexOf(':');
                        if (c <= 0) usage(`--header ${h}: not "Name: value"`);
                        o.headers[h.slice(0, c).trim()] = h.slice(c + 1).trim();
                } else usage(`unknown argument ${a}`);
        }
        if (!o.base) usage('--base is required');
        if (!endpoints.includes(o.endpoint)) usage(`--endpoint must be one of ${endpoints.join(', ')}`);
        if (o.max !== undefined && !Number.isInteger(o.max)) usage('--max needs an integer');
        return o;
}

function usage(msg) {
        process.stderr.write(`${path.basename(process.argv[1])}: ${msg}\n`);
        process.exit(2);
}

function libraryVersion(name) {
        for (const dir of (process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean)) {
                try {
                        return JSON.parse(fs.readFileSync(path.join(dir, name, 'package.json'), 'utf8')).version;
                } catch (e) {
                        // not in this directory
                }
        }
        return null;
}

// Collects the deltas of a stream and when each arrived.
class Deltas {
        constructor(stopAfter) {
                this.stopAfter = stopAfter;
                this.stopped = false;
                this.text = '';
                this.count = 0;
                this.ms = [];
                this.start = process.hrtime.bigint();
        }

        // Returns true when the caller should stop (--stop-after reached).
        add(text) {
                if (typeof text !== 'string' || text === '') return false;
                this.text += text;
                this.count++;
                this.ms.push(Number(process.hrtime.bigint() - this.start) / 1e6);
                return this.stopAfter !== undefined && this.count >= this.stopAfter;
        }
}

function printResult(library, o, fields) {
        const out = {library, version: libraryVersion(library), pid: process.pid, endpoint: o.endpoint, stream: o.stream,
            ...fields};
        process.stdout.write(JSON.stringify(out) + '\n');
}

async function run(library, o, fn) {
        try {
                printResult(library, o, await fn());
        } catch (e) {
                const out = {library, version: libraryVersion(library), pid: process.pid, endpoint: o.endpoint,
                    stream: o.stream, error: e && e.constructor ? e.constructor.name : String(e),
                    status: e && (e.status ?? e.status_code ?? null), message: e && e.message};
                process.stdout.write(JSON.stringify(out) + '\n');
                process.exitCode = 3;
        }
}

module.exports = {parseArgs, Deltas, run};
