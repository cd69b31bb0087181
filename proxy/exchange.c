/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * The life of one request through the proxy (see exchange.h). An exchange is
 * freed only when nothing refers to it any more: no daemon call pending (its
 * callbacks carry it), no upstream transfer, and the client's reply finished
 * (or the client gone). Every path to the end of a budgeted exchange goes
 * through exchange_release(), so an allocation is never left open: a
 * refusal, an upstream failure, a cut, a client that left.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "api.h"
#include "daemon-client.h"
#include "exchange.h"
#include "listener.h"
#include "peer.h"

/* Bytes queued for a client before the upstream transfer is paused: a slow
 * reader makes the proxy hold at most about this much per exchange. */
#define CLIENT_HIGH_WATER_BYTES (256 * 1024)

struct Exchange {
        ProxyListener *listener;
        ProxyContext *ctx;
        struct evhttp_request *req;
        struct evhttp_connection *evcon;
        ProxyConn *client; /* evcon's record: its close reaches us through it */
        struct event *peek;
        LIST_FIELDS(Exchange, exchanges);

        const char *method;
        char *uri;
        char **headers; /* to forward, NULL-terminated */
        size_t n_headers;
        char *body;
        size_t body_len;

        ApiEndpoint ep;
        bool ollama_flavor;
        bool budgeted;
        ApiRequest api;
        char *agent, *task_class;
        uint64_t wait_usec;
        bool have_peer;
        uid_t peer_uid;
        pid_t peer_pid;

        DaemonConn *conn;
        unsigned daemon_pending;
        bool granted, released, report_pending;
        char allocation[TB_ALLOCATION_ID_MAX];
        uint64_t hard_limit, estimate;
        int error_after_release; /* an HTTP status to answer once the Release is in */
        char *error_message;

        UpstreamTransfer *transfer;
        bool in_upstream;
        long status;
        bool reply_started, reply_done, client_gone, cut, stream_error;
        ApiStream *stream;
        ApiBuffer kept; /* a non-streamed budgeted body, for its usage */
        bool kept_overflow;
        uint64_t reply_bytes; /* of that body, kept or not */
        ApiUsage usage;
        uint64_t reported_input, reported_output, last_report_usec;
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void exchange_release(Exchange *ex);
static void exchange_forward(Exchange *ex);

static void exchange_maybe_free(Exchange *ex) {
        if (ex->daemon_pending > 0 || ex->transfer || !ex->reply_done)
                return;
        if (ex->budgeted && ex->granted)
                log_info("%s %s: %ld%s%s, %s input %" PRIu64 " output %" PRIu64 " tokens%s", ex->method,
                         ex->uri, ex->status, ex->cut ? " cut at the hard limit" : "",
                         ex->client_gone ? " (client gone)" : "", ex->allocation, ex->usage.input,
                         ex->usage.output, ex->usage.final ? "" : " (counted)");
        else if (ex->budgeted)
                log_info("%s %s: %ld, nothing granted%s", ex->method, ex->uri, ex->status,
                         ex->client_gone ? " (client gone)" : "");
        LIST_REMOVE(exchanges, ex->ctx->exchanges, ex);
        ex->ctx->n_exchanges--;
        daemon_pool_put(ex->ctx->daemon, ex->conn);
        if (ex->peek)
                event_free(ex->peek);
        for (size_t i = 0; i < ex->n_headers; i++)
                free(ex->headers[i]);
        free(ex->headers);
        free(ex->uri);
        free(ex->body);
        free(ex->agent);
        free(ex->task_class);
        free(ex->error_message);
        api_request_done(&ex->api);
        api_stream_free(ex->stream);
        api_buffer_done(&ex->kept);
        free(ex);
}

/* No more news of the connection's close. */
static void exchange_detach(Exchange *ex) {
        if (ex->client && ex->client->exchange == ex)
                ex->client->exchange = NULL;
        ex->client = NULL;
}

/* The reply is over, or the client left: libevent owns the request from here. */
static void exchange_end_reply(Exchange *ex) {
        if (ex->reply_done)
                return;
        ex->reply_done = true;
        if (ex->peek)
                event_del(ex->peek);
        exchange_detach(ex);
        if (ex->req)
                evhttp_send_reply_end(ex->req); /* a request whose client left is freed by this */
        ex->req = NULL;
        ex->evcon = NULL;
}

/* libevent 2.1 calls 429 "Client Error" and 413 "Request Entity Too Large". */
static const char *status_phrase(int status) {
        switch (status) {
        case 400:
                return "Bad Request";
        case 429:
                return "Too Many Requests";
        case 500:
                return "Internal Server Error";
        case 502:
                return "Bad Gateway";
        case 503:
                return "Service Unavailable";
        default:
                return NULL;
        }
}

/* type NULL: the API's own for status (api_error_body()). */
static void reply_error(Exchange *ex, int status, const char *type, const char *message,
                        uint64_t retry_after_usec) {
        if (ex->reply_done)
                return;
        if (ex->reply_started || !ex->req || ex->client_gone) {
                exchange_end_reply(ex);
                return;
        }
        char *body =
                api_error_body(ex->ep != API_EP_NONE ? ex->ep : API_EP_OPENAI_CHAT, status, type, message);
        struct evkeyvalq *out = evhttp_request_get_output_headers(ex->req);
        struct evbuffer *buf = evbuffer_new();

        evhttp_clear_headers(out);
        evhttp_add_header(out, "Content-Type", "application/json");
        if (retry_after_usec > 0) {
                char s[32];
                snprintf(s, sizeof(s), "%" PRIu64, (retry_after_usec + 999999) / 1000000);
                evhttp_add_header(out, "Retry-After", s);
        }
        if (buf && body)
                evbuffer_add(buf, body, strlen(body));
        ex->status = status;
        ex->reply_done = true;
        if (ex->peek)
                event_del(ex->peek);
        exchange_detach(ex);
        evhttp_send_reply(ex->req, status, status_phrase(status), buf);
        ex->req = NULL;
        ex->evcon = NULL;
        if (buf)
                evbuffer_free(buf);
        free(body);
}

/* ---- the client going away ---- */

static void exchange_client_gone(Exchange *ex) {
        if (ex->client_gone)
                return;
        ex->client_gone = true;
        log_debug("%s %s: the client left", ex->method, ex->uri);
        if (ex->transfer && !ex->in_upstream)
                ex->transfer = upstream_transfer_cancel(ex->transfer);
        exchange_end_reply(ex);
        if (!ex->transfer)
                exchange_release(ex);
        exchange_maybe_free(ex);
}

void exchange_client_closed(Exchange *ex) {
        /* libevent frees the connection after this; a request we have not finished is detached
         * from it and freed by exchange_end_reply(). */
        ex->client = NULL;
        ex->evcon = NULL;
        exchange_client_gone(ex);
}

/* evhttp stops reading a connection while its request is handled, so a client that leaves while
 * the daemon or the upstream is silent goes unnoticed: this watches the socket for its EOF. */
static void client_peek_cb(evutil_socket_t fd, short what, void *userdata) {
        Exchange *ex = userdata;
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) {
                if (n > 0) /* a pipelined request: evhttp reads it later; stop watching */
                        event_del(ex->peek);
                return;
        }
        struct evhttp_connection *evcon = ex->evcon;
        ex->req = NULL; /* freed with the connection */
        ex->evcon = NULL;
        exchange_detach(ex);
        if (evcon)
                evhttp_connection_free(evcon); /* its record goes with it */
        exchange_client_gone(ex);
}

/* ---- the daemon ---- */

/* What to tell the daemon: totals never go down (the daemon refuses a total lower than the last
 * reported); with final (the end, a cut), an upstream that answered 2xx without its own count is
 * charged the prompt estimate as input, never zero. Reports send what was counted, so that the
 * upstream's exact count can still follow. */
static void exchange_totals(Exchange *ex, bool final, uint64_t *ret_input, uint64_t *ret_output) {
        uint64_t input = ex->usage.input, output = ex->usage.output;

        if (final && !ex->usage.final && ex->status >= 200 && ex->status < 300 &&
            input < ex->api.prompt_estimate)
                input = ex->api.prompt_estimate;
        *ret_input = input > ex->reported_input ? input : ex->reported_input;
        *ret_output = output > ex->reported_output ? output : ex->reported_output;
}

static void release_cb(tb_client *c, int error, const tb_release_reply *reply, void *userdata) {
        Exchange *ex = userdata;

        ex->daemon_pending--;
        if (error < 0) {
                /* The allocation stays open on that connection: closed instead of kept idle, so the
                 * daemon settles it at what was reported. */
                log_warning("Release of %s failed: %s", ex->allocation, tb_client_error(c));
                daemon_conn_discard(ex->conn);
        } else
                log_debug("released %s: used %" PRIu64 ", refunded %" PRIu64, ex->allocation, reply->used,
                          reply->refunded);
        if (ex->error_after_release)
                reply_error(ex, ex->error_after_release, NULL,
                            ex->error_message ? ex->error_message : "upstream failed", 0);
        exchange_maybe_free(ex);
}

/* Settles the allocation with what was counted (once); without one, finishes what is pending. */
static void exchange_release(Exchange *ex) {
        if (ex->granted && !ex->released && ex->conn) {
                uint64_t input, output;
                exchange_totals(ex, true, &input, &output);
                tb_release_params p = {
                        .allocation = ex->allocation,
                        .input_tokens = input,
                        .output_tokens = output,
                };
                ex->released = true;
                if (tb_release_async(daemon_conn_client(ex->conn), &p, release_cb, ex) == 0) {
                        ex->daemon_pending++;
                        daemon_conn_arm(ex->conn);
                        return;
                }
                log_warning("Release of %s not sent: %s (the daemon settles it when the connection closes)",
                            ex->allocation, tb_client_error(daemon_conn_client(ex->conn)));
        }
        if (ex->error_after_release) {
                int status = ex->error_after_release;
                ex->error_after_release = 0;
                reply_error(ex, status, NULL, ex->error_message ? ex->error_message : "upstream failed", 0);
        }
}

static void cut_stream(Exchange *ex);

static void report_cb(tb_client *c, int error, const tb_report_reply *reply, void *userdata) {
        Exchange *ex = userdata;

        ex->daemon_pending--;
        ex->report_pending = false;
        if (error < 0)
                log_warning("Report of %s failed: %s", ex->allocation, tb_client_error(c));
        else if ((reply->state == TB_STATE_EXCEEDED || strcmp(reply->action_name, "terminate") == 0) &&
                 ex->stream && !ex->cut && !ex->reply_done) {
                cut_stream(ex);
                ex->transfer = upstream_transfer_cancel(ex->transfer);
                exchange_release(ex);
        }
        exchange_maybe_free(ex);
}

static void maybe_report(Exchange *ex) {
        uint64_t input, output, now = now_usec(), reported = ex->reported_input + ex->reported_output;
        const ProxyConfig *cfg = ex->ctx->config;

        exchange_totals(ex, false, &input, &output);
        if (!ex->granted || ex->released || ex->report_pending || input + output <= reported)
                return;
        if (input + output - reported < cfg->report_tokens &&
            now - ex->last_report_usec < cfg->report_interval_msec * 1000)
                return;
        tb_report_params p = {
                .allocation = ex->allocation,
                .input_tokens = input,
                .output_tokens = output,
        };
        if (tb_report_async(daemon_conn_client(ex->conn), &p, report_cb, ex) < 0)
                return;
        ex->report_pending = true;
        ex->daemon_pending++;
        ex->reported_input = input;
        ex->reported_output = output;
        ex->last_report_usec = now;
        daemon_conn_arm(ex->conn);
}

static void daemon_down(Exchange *ex, const char *why) {
        if (ex->listener->config->fail == PROXY_FAIL_OPEN) {
                log_err("FAIL OPEN: the daemon is unreachable (%s): %s %s forwarded UNBUDGETED", why,
                        ex->method, ex->uri);
                ex->budgeted = false;
                exchange_forward(ex);
                return;
        }
        log_warning("the daemon is unreachable (%s): %s %s answered 503", why, ex->method, ex->uri);
        char msg[512];
        snprintf(msg, sizeof(msg), "tokenbudget: the budget daemon is unreachable (%s)", why);
        reply_error(ex, 503, NULL, msg, 0);
        exchange_maybe_free(ex);
}

static int send_request(Exchange *ex);

static void refused(Exchange *ex, tb_client *c) {
        char msg[1024];

        ex->ctx->n_refused++;
        snprintf(msg, sizeof(msg), "tokenbudget refused the request: %s", tb_client_error(c));
        reply_error(ex, 429, NULL, msg, tb_client_retry_after_usec(c));
}

static bool transport_error(int error) {
        return error == -ECONNRESET || error == -ETIMEDOUT || error == -EPROTO || error == -ENOTCONN ||
               error == -ECONNREFUSED || error == -ENOENT || error == -EPIPE;
}

static void request_cb(tb_client *c, int error, const char *reply_json, void *userdata) {
        Exchange *ex = userdata;
        const char *name = tb_client_error_name(c), *param;

        ex->daemon_pending--;
        if (ex->have_peer && name &&
            ((error == -EINVAL && strcmp(name, "org.varlink.service.InvalidParameter") == 0 &&
              (param = tb_client_error_parameter(c, "parameter")) && strcmp(param, "onBehalfOf") == 0) ||
             (error == -EACCES && strcmp(name, "org.varlink.service.PermissionDenied") == 0))) {
                /* A client that exited at once, a pid in another namespace (InvalidParameter), or a
                 * proxy whose user is not in the daemon's trusted_proxies (PermissionDenied, for good:
                 * said once): asked again as the proxy itself. */
                if (error == -EACCES) {
                        log_warning(
                                "the daemon refuses onBehalfOf (PermissionDenied): requests are charged to "
                                "the proxy's own user; list it in the daemon's trusted_proxies");
                        daemon_pool_set_on_behalf_unsupported(ex->ctx->daemon);
                } else
                        log_notice("%s %s: the daemon refused onBehalfOf {pid %d, uid %u} (%s): charged to "
                                   "the proxy",
                                   ex->method, ex->uri, (int)ex->peer_pid, (unsigned)ex->peer_uid,
                                   tb_client_error(c));
                ex->have_peer = false;
                if (!ex->client_gone && send_request(ex) >= 0)
                        return;
        }
        if (error < 0) {
                if (ex->client_gone)
                        ;
                else if (transport_error(error) || error == -EACCES || error == -EOPNOTSUPP ||
                         error == -EINVAL)
                        daemon_down(ex, tb_client_error(c));
                else
                        refused(ex, c);
                exchange_maybe_free(ex);
                return;
        }

        json_object *reply = json_tokener_parse(reply_json), *v;
        const char *alloc = NULL, *model = NULL;
        uint64_t suggested = 0, granted = 0;
        if (reply && json_object_object_get_ex(reply, "allocation", &v))
                alloc = json_object_get_string(v);
        if (reply && json_object_object_get_ex(reply, "granted", &v))
                granted = (uint64_t)json_object_get_int64(v);
        if (reply && json_object_object_get_ex(reply, "hardLimit", &v))
                ex->hard_limit = (uint64_t)json_object_get_int64(v);
        if (reply && json_object_object_get_ex(reply, "suggestedMaxTokens", &v))
                suggested = (uint64_t)json_object_get_int64(v);
        if (reply && json_object_object_get_ex(reply, "suggestedModel", &v))
                model = json_object_get_string(v);
        if (!alloc || strlen(alloc) >= sizeof(ex->allocation)) {
                json_object_put(reply);
                daemon_down(ex, "a Request reply without an allocation");
                return;
        }
        strcpy(ex->allocation, alloc);
        ex->granted = true;
        if (ex->client_gone) {
                json_object_put(reply);
                exchange_release(ex);
                exchange_maybe_free(ex);
                return;
        }
        if (!ex->listener->config->allow_model_substitution)
                model = NULL;
        char *body = NULL;
        size_t len = 0;
        int r = api_request_rewrite(ex->ep, ex->ollama_flavor, &ex->api, suggested ? suggested : granted,
                                    model, &body, &len);
        json_object_put(reply);
        if (r < 0) {
                ex->error_after_release = 500;
                ex->error_message = strdup("tokenbudget-proxy could not rewrite the request body");
                exchange_release(ex);
                exchange_maybe_free(ex);
                return;
        }
        free(ex->body);
        ex->body = body;
        ex->body_len = len;
        exchange_forward(ex);
}

static int send_request(Exchange *ex) {
        json_object *p = json_object_new_object();
        const char *s;
        int r;

        json_object_object_add(p, "estimate", json_object_new_int64((int64_t)ex->estimate));
        json_object_object_add(p, "promptTokens", json_object_new_int64((int64_t)ex->api.prompt_estimate));
        if (ex->api.model)
                json_object_object_add(p, "model", json_object_new_string(ex->api.model));
        if (ex->agent)
                json_object_object_add(p, "agent", json_object_new_string(ex->agent));
        if (ex->task_class)
                json_object_object_add(p, "class", json_object_new_string(ex->task_class));
        if (ex->wait_usec)
                json_object_object_add(p, "waitUsec", json_object_new_int64((int64_t)ex->wait_usec));
        if (ex->have_peer && daemon_pool_on_behalf_supported(ex->ctx->daemon)) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "pid", json_object_new_int64(ex->peer_pid));
                json_object_object_add(o, "uid", json_object_new_int64(ex->peer_uid));
                json_object_object_add(p, "onBehalfOf", o);
        }
        s = json_object_to_json_string_ext(p, JSON_C_TO_STRING_PLAIN);
        r = tb_call_async(daemon_conn_client(ex->conn), "io.tokenbudget.agent.Request", s, request_cb, ex);
        json_object_put(p);
        if (r < 0)
                return r;
        ex->daemon_pending++;
        daemon_conn_arm(ex->conn);
        return 0;
}

/* ---- the upstream ---- */

static bool header_is_hop_by_hop(const char *name) {
        static const char *const hop[] = {"connection",
                                          "keep-alive",
                                          "proxy-connection",
                                          "proxy-authenticate",
                                          "proxy-authorization",
                                          "te",
                                          "trailer",
                                          "transfer-encoding",
                                          "upgrade",
                                          "content-length",
                                          "host",
                                          "expect"};
        for (size_t i = 0; i < ELEMENTSOF(hop); i++)
                if (strcasecmp(name, hop[i]) == 0)
                        return true;
        return false;
}

static struct evbuffer *client_output(Exchange *ex) {
        struct bufferevent *bev = ex->evcon ? evhttp_connection_get_bufferevent(ex->evcon) : NULL;
        return bev ? bufferevent_get_output(bev) : NULL;
}

static void client_drained_cb(struct evhttp_connection *evcon, void *userdata) {
        Exchange *ex = userdata;

        if (ex->transfer && upstream_transfer_paused(ex->transfer)) {
                ex->in_upstream = true;
                upstream_transfer_resume(ex->transfer);
                ex->in_upstream = false;
                if (ex->client_gone && ex->transfer) {
                        ex->transfer = upstream_transfer_cancel(ex->transfer);
                        exchange_release(ex);
                        exchange_maybe_free(ex);
                }
        }
}

static void send_to_client(Exchange *ex, const char *data, size_t len) {
        struct evbuffer *buf;

        if (len == 0 || !ex->req || ex->reply_done)
                return;
        buf = evbuffer_new();
        if (!buf)
                return;
        evbuffer_add(buf, data, len);
        evhttp_send_reply_chunk_with_cb(ex->req, buf, client_drained_cb, ex);
        evbuffer_free(buf);
}

static void stream_usage(Exchange *ex) {
        api_stream_usage(ex->stream, &ex->usage);
}

static void cut_stream(Exchange *ex) {
        ApiBuffer out = {};

        ex->cut = true;
        ex->ctx->n_cut++;
        if (api_stream_cut(ex->stream, &out) >= 0)
                send_to_client(ex, out.data, out.len);
        api_buffer_done(&out);
        stream_usage(ex);
        exchange_end_reply(ex);
}

static int upstream_response_cb(UpstreamTransfer *t, long status, char **headers, size_t n, void *userdata) {
        Exchange *ex = userdata;
        bool streamed = false;

        ex->status = status;
        if (ex->client_gone || !ex->req)
                return -1;
        struct evkeyvalq *out = evhttp_request_get_output_headers(ex->req);
        for (size_t i = 0; i < n; i++) {
                char *colon = strchr(headers[i], ':');
                if (!colon)
                        continue;
                *colon = '\0';
                const char *value = colon + 1;
                while (*value == ' ' || *value == '\t')
                        value++;
                if (!header_is_hop_by_hop(headers[i]))
                        evhttp_add_header(out, headers[i], value);
                if (strcasecmp(headers[i], "content-type") == 0 &&
                    (strstr(value, "text/event-stream") || strstr(value, "ndjson")))
                        streamed = true;
                *colon = ':';
        }
        if (ex->budgeted && status >= 200 && status < 300 && ex->api.stream && streamed) {
                bool injected = (ex->ep == API_EP_OPENAI_CHAT || ex->ep == API_EP_OPENAI_COMPLETIONS) &&
                                !ex->api.client_wants_usage;
                ex->stream = api_stream_new(ex->ep, injected);
                if (!ex->stream)
                        return -1;
                /* A cut before the stream said its input reports the prompt estimate. */
                api_stream_set_input_estimate(ex->stream, ex->api.prompt_estimate);
        }
        ex->reply_started = true;
        evhttp_send_reply_start(ex->req, (int)status, NULL);
        return 0;
}

static size_t upstream_body_cb(UpstreamTransfer *t, const char *data, size_t len, void *userdata) {
        Exchange *ex = userdata;
        struct evbuffer *pending;

        if (ex->client_gone || ex->cut || ex->reply_done)
                return 0;
        pending = client_output(ex);
        if (pending && evbuffer_get_length(pending) > CLIENT_HIGH_WATER_BYTES)
                return UPSTREAM_PAUSE;
        if (ex->stream) {
                ApiBuffer out = {};
                int r = api_stream_feed(ex->stream, data, len, &out);
                send_to_client(ex, out.data, out.len);
                api_buffer_done(&out);
                stream_usage(ex);
                if (r < 0) {
                        log_warning("%s %s: the upstream's stream is not what the API sends (%s): ended",
                                    ex->method, ex->uri, strerror(-r));
                        ex->stream_error = true;
                        exchange_end_reply(ex);
                        return 0;
                }
                uint64_t input, output;
                exchange_totals(ex, true, &input, &output);
                if (ex->hard_limit && input + output >= ex->hard_limit && !api_stream_done(ex->stream)) {
                        cut_stream(ex);
                        return 0;
                }
                maybe_report(ex);
                return len;
        }
        ex->reply_bytes += len;
        if (ex->budgeted && !ex->kept_overflow) {
                if (ex->kept.len + len > ex->ctx->config->max_response_bytes) {
                        ex->kept_overflow = true;
                } else {
                        if (ex->kept.len + len + 1 > ex->kept.cap) {
                                size_t cap = (ex->kept.len + len + 1) * 2;
                                char *d = realloc(ex->kept.data, cap);
                                if (!d)
                                        return 0;
                                ex->kept.data = d;
                                ex->kept.cap = cap;
                        }
                        memcpy(ex->kept.data + ex->kept.len, data, len);
                        ex->kept.len += len;
                }
        }
        send_to_client(ex, data, len);
        return len;
}

static void upstream_done_cb(UpstreamTransfer *t, int error, const char *message, void *userdata) {
        Exchange *ex = userdata;

        ex->transfer = NULL;
        if (ex->cut || ex->client_gone || ex->stream_error) {
                exchange_release(ex);
                exchange_maybe_free(ex);
                return;
        }
        if (error < 0) {
                log_warning("%s %s: the upstream failed: %s", ex->method, ex->uri, message);
                if (!ex->reply_started) {
                        char msg[512];
                        snprintf(msg, sizeof(msg), "tokenbudget-proxy: the upstream failed: %s", message);
                        ex->status = 502;
                        ex->error_after_release = 502;
                        ex->error_message = strdup(msg);
                }
                exchange_release(ex);
                if (ex->reply_started)
                        exchange_end_reply(ex);
                exchange_maybe_free(ex);
                return;
        }
        if (ex->budgeted && !ex->stream && ex->status >= 200 && ex->status < 300) {
                int r = -ENODATA;
                if (!ex->kept_overflow)
                        r = api_response_usage(ex->ep, ex->kept.data ? ex->kept.data : "", ex->kept.len,
                                               &ex->usage);
                if (r < 0) {
                        /* No usage in the reply: never charge it as zero; about 4 bytes a token. */
                        ex->usage = (ApiUsage){.input = ex->api.prompt_estimate,
                                               .output = (ex->reply_bytes + 3) / 4};
                        log_notice("%s %s: no usage in the reply: counted %" PRIu64
                                   " output tokens from its size",
                                   ex->method, ex->uri, ex->usage.output);
                }
        }
        exchange_end_reply(ex);
        exchange_release(ex);
        exchange_maybe_free(ex);
}

static const UpstreamCallbacks upstream_callbacks = {
        .response = upstream_response_cb,
        .body = upstream_body_cb,
        .done = upstream_done_cb,
};

static void exchange_forward(Exchange *ex) {
        UpstreamRequest r = {
                .method = ex->method,
                .path = ex->uri,
                .headers = (const char *const *)ex->headers,
                .body = TAKE_PTR(ex->body),
                .body_len = ex->body_len,
                .connect_timeout_msec = ex->ctx->config->connect_timeout_msec,
        };
        int e = upstream_transfer_start(ex->ctx->upstream, &ex->listener->target, &r, &upstream_callbacks,
                                        ex, &ex->transfer);
        if (e < 0) {
                ex->status = 502;
                ex->error_after_release = 502;
                ex->error_message = strdup("tokenbudget-proxy could not start the upstream request");
                exchange_release(ex);
                exchange_maybe_free(ex);
        }
}

/* ---- the start ---- */

static const char *method_name(enum evhttp_cmd_type t) {
        switch (t) {
        case EVHTTP_REQ_GET:
                return "GET";
        case EVHTTP_REQ_POST:
                return "POST";
        case EVHTTP_REQ_HEAD:
                return "HEAD";
        case EVHTTP_REQ_PUT:
                return "PUT";
        case EVHTTP_REQ_DELETE:
                return "DELETE";
        case EVHTTP_REQ_OPTIONS:
                return "OPTIONS";
        case EVHTTP_REQ_PATCH:
                return "PATCH";
        default:
                return NULL;
        }
}

/* "tb-AGENT" in an API key names the agent (the key is the proxy's, not the upstream's: dropped). */
static bool take_key_agent(Exchange *ex, const char *key) {
        if (strncmp(key, "tb-", 3) != 0 || key[3] == '\0')
                return false;
        if (!ex->agent)
                ex->agent = strdup(key + 3);
        return true;
}

static int collect_headers(Exchange *ex) {
        struct evkeyvalq *in = evhttp_request_get_input_headers(ex->req);
        struct evkeyval *h;
        size_t n = 0;

        for (h = in->tqh_first; h; h = h->next.tqe_next)
                n++;
        ex->headers = calloc(n + 1, sizeof(char *));
        if (!ex->headers)
                return -ENOMEM;
        for (h = in->tqh_first; h; h = h->next.tqe_next) {
                if (header_is_hop_by_hop(h->key))
                        continue;
                if (strcasecmp(h->key, "x-tokenbudget-agent") == 0) {
                        free(ex->agent);
                        ex->agent = strdup(h->value);
                        continue;
                }
                if (strcasecmp(h->key, "x-tokenbudget-class") == 0) {
                        free(ex->task_class);
                        ex->task_class = strdup(h->value);
                        continue;
                }
                if (strcasecmp(h->key, "x-tokenbudget-wait") == 0) {
                        char *end;
                        unsigned long long ms = strtoull(h->value, &end, 10);
                        if (*h->value && !*end && ms <= 3600000)
                                ex->wait_usec = ms * 1000;
                        continue;
                }
                if (strcasecmp(h->key, "authorization") == 0 && strncasecmp(h->value, "Bearer ", 7) == 0 &&
                    take_key_agent(ex, h->value + 7))
                        continue;
                if (strcasecmp(h->key, "x-api-key") == 0 && take_key_agent(ex, h->value))
                        continue;
                /* Usage is read out of the body: it must come uncompressed. */
                if (ex->budgeted && strcasecmp(h->key, "accept-encoding") == 0)
                        continue;
                if (asprintf(&ex->headers[ex->n_headers], "%s: %s", h->key, h->value) < 0)
                        return -ENOMEM;
                ex->n_headers++;
        }
        return 0;
}

/* Who the client is, once per connection (the /proc walk is the costly part). */
static void exchange_identify(Exchange *ex) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(ex->evcon);
        int fd = bev ? bufferevent_getfd(bev) : -1, r;
        ProxyConn *c = ex->client;

        if (fd < 0)
                return;
        if (c && c->peer_looked_up) {
                r = c->peer_error;
                ex->peer_uid = c->peer_uid;
                ex->peer_pid = c->peer_pid;
        } else {
                r = peer_identify(fd, &ex->peer_uid, &ex->peer_pid);
                if (r >= 0 && ex->peer_pid == 0)
                        /* /proc/PID/fd of another user's process is closed to a proxy without
                         * CAP_DAC_READ_SEARCH (to list it) and CAP_SYS_PTRACE (to read its links):
                         * the uid alone cannot be sent (onBehalfOf needs the pid). */
                        log_notice(
                                "%s %s: the client (uid %u) has no process this proxy can see: charged to "
                                "the proxy (a Unix listener gives its pid, SO_PEERCRED)",
                                ex->method, ex->uri, (unsigned)ex->peer_uid);
                if (c) {
                        c->peer_looked_up = true;
                        c->peer_error = r;
                        c->peer_uid = ex->peer_uid;
                        c->peer_pid = ex->peer_pid;
                }
        }
        if (r < 0) {
                if (r != -EADDRNOTAVAIL)
                        log_debug("%s %s: who the client is is unknown: %s", ex->method, ex->uri,
                                  strerror(-r));
                return;
        }
        ex->have_peer = ex->peer_pid > 0;
}

static void exchange_budget(Exchange *ex) {
        const char *err = NULL;
        char *why = NULL;
        int r = api_request_parse(ex->ep, ex->ollama_flavor, ex->body ? ex->body : "", ex->body_len,
                                  &ex->api, &err);

        if (r < 0) {
                if (ex->listener->config->forward_malformed) {
                        log_notice("%s %s: %s: forwarded unbudgeted (forward_malformed)", ex->method,
                                   ex->uri, err ? err : "malformed body");
                        ex->budgeted = false;
                        exchange_forward(ex);
                        return;
                }
                char msg[512];
                snprintf(msg, sizeof(msg), "tokenbudget-proxy: the request body is not valid: %s",
                         err ? err : "malformed JSON");
                reply_error(ex, 400, NULL, msg, 0);
                exchange_maybe_free(ex);
                return;
        }
        /* max_output counts every choice (OpenAI's n); so does the default. */
        ex->estimate = (ex->api.has_max_output ? ex->api.max_output
                                               : ex->ctx->config->default_max_output *
                                                         (ex->api.choices ? ex->api.choices : 1)) +
                       ex->api.prompt_estimate;
        exchange_identify(ex);
        r = daemon_pool_get(ex->ctx->daemon, &ex->conn, &why);
        if (r < 0) {
                daemon_down(ex, why ? why : strerror(-r));
                free(why);
                return;
        }
        r = send_request(ex);
        if (r < 0)
                daemon_down(ex, tb_client_error(daemon_conn_client(ex->conn)));
}

void exchange_start(ProxyListener *l, struct evhttp_request *req) {
        ProxyContext *ctx = l->ctx;
        Exchange *ex = calloc(1, sizeof(*ex));
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        const char *uri = evhttp_request_get_uri(req);

        if (!ex) {
                evhttp_send_error(req, 503, "Out of memory");
                return;
        }
        ex->listener = l;
        ex->ctx = ctx;
        ex->req = req;
        ex->evcon = evhttp_request_get_connection(req);
        LIST_PREPEND(exchanges, ctx->exchanges, ex);
        ctx->n_exchanges++;
        ex->method = method_name(evhttp_request_get_command(req));
        ex->uri = strdup(uri ? uri : "");
        ex->body_len = evbuffer_get_length(in);
        ex->body = malloc(ex->body_len + 1);
        if (!ex->method || !ex->uri || !ex->body || ex->uri[0] != '/') {
                ex->method = ex->method ? ex->method : "?";
                reply_error(ex, 400, NULL, "tokenbudget-proxy: not a request it can forward", 0);
                exchange_maybe_free(ex);
                return;
        }
        evbuffer_copyout(in, ex->body, ex->body_len);
        ex->body[ex->body_len] = '\0';
        ex->client = proxy_conn_get(l, ex->evcon);
        if (ex->client)
                ex->client->exchange = ex;
        struct bufferevent *bev = evhttp_connection_get_bufferevent(ex->evcon);
        if (bev && bufferevent_getfd(bev) >= 0) {
                ex->peek = event_new(ctx->base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, client_peek_cb,
                                     ex);
                if (ex->peek)
                        event_add(ex->peek, NULL);
        }

        ex->ep = api_endpoint(l->config->api, ex->method, ex->uri, &ex->ollama_flavor);
        ex->budgeted = ex->ep != API_EP_NONE;
        if (collect_headers(ex) < 0) {
                reply_error(ex, 503, NULL, "tokenbudget-proxy: out of memory", 0);
                exchange_maybe_free(ex);
                return;
        }
        if (!ex->budgeted) {
                ctx->n_passthrough++;
                exchange_forward(ex);
                return;
        }
        ctx->n_budgeted++;
        exchange_budget(ex);
}

void exchange_free_all(ProxyContext *ctx) {
        while (ctx->exchanges) {
                Exchange *ex = ctx->exchanges;
                ex->transfer = upstream_transfer_cancel(ex->transfer);
                exchange_detach(ex);
                ex->reply_done = true;
                ex->daemon_pending = 0; /* the handles are closed with the pool: no callback runs */
                daemon_pool_put(ctx->daemon, TAKE_PTR(ex->conn));
                exchange_maybe_free(ex);
        }
}
