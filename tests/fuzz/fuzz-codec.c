/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer entry point for the Varlink codec: splits the input into frames
 * the way the server does (varlink_frame_next over a buffer), parses every
 * frame as a call and as a reply, validates call parameters against a
 * table like io.tokenbudget.agent.Request's, and checks one invariant: a
 * parsed message formatted again parses to the same values. It does not
 * exercise any I/O.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "varlink.h"

/* Small enough that the fuzzer also reaches the size limit. */
#define FUZZ_MAX_MESSAGE_BYTES 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const VarlinkField fuzz_fields[] = {
        {"estimate", VARLINK_FIELD_INT, true, 1000000000000},
        {"class", VARLINK_FIELD_STRING, true, 64},
        {"agent", VARLINK_FIELD_STRING, true, 64},
        {"priority", VARLINK_FIELD_STRING, false, 0},
        {"oneshot", VARLINK_FIELD_BOOL, true, 0},
};

/* Formats the parsed call as a reply and as a call, and parses both back. */
static void fuzz_round_trip(const VarlinkCall *call) {
        VarlinkBuffer b = {};
        VarlinkReply reply;
        VarlinkCall again;
        const char *reason;
        size_t frame_len;

        if (varlink_format_reply(&b, call->parameters, call->more) < 0 ||
            varlink_format_call(&b, call->method, call->parameters, call->oneway, call->more) < 0)
                abort();

        if (varlink_frame_next(b.data, b.len, b.len, &frame_len) != 1 ||
            varlink_reply_parse(b.data, frame_len, &reply, &reason) < 0 ||
            !json_object_equal(reply.parameters, call->parameters) || reply.continues != call->more)
                abort();
        varlink_reply_done(&reply);
        varlink_buffer_consume(&b, frame_len + 1);

        if (varlink_frame_next(b.data, b.len, b.len, &frame_len) != 1 ||
            varlink_call_parse(b.data, frame_len, &again, &reason) < 0 ||
            strcmp(again.method, call->method) != 0 ||
            !json_object_equal(again.parameters, call->parameters))
                abort();
        varlink_call_done(&again);
        varlink_buffer_clear(&b);
}

static void fuzz_frame(const char *msg, size_t len) {
        VarlinkValue values[sizeof(fuzz_fields) / sizeof(fuzz_fields[0])];
        const char *reason, *bad;
        VarlinkReply reply;
        VarlinkCall call;

        if (varlink_call_parse(msg, len, &call, &reason) == 0) {
                size_t interface_len;

                if (varlink_method_split(call.method, &interface_len) < 0)
                        abort();
                if (varlink_params_parse(call.parameters, fuzz_fields,
                                         sizeof(fuzz_fields) / sizeof(fuzz_fields[0]), values, &bad) < 0) {
                        VarlinkBuffer b = {};

                        if (!bad || varlink_format_invalid_parameter(&b, bad) < 0)
                                abort();
                        varlink_buffer_clear(&b);
                }
                fuzz_round_trip(&call);
                varlink_call_done(&call);
        } else if (!reason)
                abort();

        if (varlink_reply_parse(msg, len, &reply, &reason) == 0)
                varlink_reply_done(&reply);
        else if (!reason)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *buf = (const char *)data;
        size_t off = 0, frame_len;
        int r;

        while ((r = varlink_frame_next(buf + off, size - off, FUZZ_MAX_MESSAGE_BYTES, &frame_len)) > 0) {
                fuzz_frame(buf + off, frame_len);
                off += frame_len + 1;
        }
        if (r != 0 && r != -EMSGSIZE)
                abort();
        /* A trailing partial frame is still worth parsing as a whole message. */
        if (r == 0 && off < size)
                fuzz_frame(buf + off, size - off);
        return 0;
}
