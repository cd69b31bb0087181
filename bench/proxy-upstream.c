/* SPDX-License-Identifier: MIT */
/*
 * proxy-upstream: the model server of the proxy section, as small and fast as
 * an HTTP server on libevent gets. POST /v1/chat/completions answers an OpenAI
 * chat completion with a fixed small usage body; a body asking for a stream
 * ("stream":true) gets an SSE stream of --chunks content chunks (one output
 * token each), one every --interval-us microseconds (each its own write, as a
 * model server emits tokens), then the finish chunk, the usage chunk when the
 * body asks for it (include_usage), and data: [DONE]. Listens on 127.0.0.1
 * (--port, 0: any) and prints "port=N" when it accepts connections.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

static struct event_base *base;
static unsigned chunks = 200;
static struct timeval interval = {0, 1000};

static const char reply_body[] =
        "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1764633600,"
        "\"model\":\"bench\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"ok\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":1,\"total_tokens\":13}}";

static const char chunk_event[] =
        "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764633600,"
        "\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok\"},"
        "\"finish_reason\":null}]}\n\n";

static const char finish_event[] =
        "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764633600,"
        "\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

typedef struct Stream {
        struct evhttp_request *req;
        struct event *timer;
        unsigned sent;
        bool usage;
} Stream;

static void stream_free(Stream *s) {
        event_free(s->timer);
        free(s);
}

static void send_text(struct evhttp_request *req, const char *text, size_t len) {
        struct evbuffer *b = evbuffer_new();

        if (!b)
                abort();
        evbuffer_add(b, text, len);
        evhttp_send_reply_chunk(req, b);
        evbuffer_free(b);
}

static void stream_tick(evutil_socket_t fd, short what, void *userdata) {
        Stream *s = userdata;
        char usage[160];
        int n;

        if (s->sent < chunks) {
                send_text(s->req, chunk_event, sizeof(chunk_event) - 1);
                s->sent++;
                event_add(s->timer, &interval);
                return;
        }
        send_text(s->req, finish_event, sizeof(finish_event) - 1);
        if (s->usage) {
                n = snprintf(usage, sizeof(usage),
                             "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
                             "\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":%u,"
                             "\"total_tokens\":%u}}\n\n",
                             chunks, chunks + 12);
                send_text(s->req, usage, (size_t)n);
        }
        send_text(s->req, "data: [DONE]\n\n", 14);
        /* The connection outlives the stream (keep-alive). */
        evhttp_connection_set_closecb(evhttp_request_get_connection(s->req), NULL, NULL);
        evhttp_send_reply_end(s->req);
        stream_free(s);
}

/* The client left mid-stream: evhttp frees the request after this. */
static void stream_closed(struct evhttp_connection *conn, void *userdata) {
        stream_free(userdata);
}

static bool body_has(struct evbuffer *body, const char *what) {
        struct evbuffer_ptr p = evbuffer_search(body, what, strlen(what), NULL);

        return p.pos >= 0;
}

static void handle(struct evhttp_request *req, void *userdata) {
        struct evbuffer *body = evhttp_request_get_input_buffer(req);
        struct evkeyvalq *out = evhttp_request_get_output_headers(req);
        struct evbuffer *reply;
        Stream *s;

        if (evhttp_request_get_command(req) != EVHTTP_REQ_POST ||
            strcmp(evhttp_request_get_uri(req), "/v1/chat/completions") != 0) {
                evhttp_send_error(req, 404, NULL);
                return;
        }
        if (body_has(body, "\"stream\":true") || body_has(body, "\"stream\": true")) {
                s = calloc(1, sizeof(*s));
                if (!s)
                        abort();
                s->req = req;
                s->usage = body_has(body, "\"include_usage\":true") ||
                           body_has(body, "\"include_usage\": true");
                s->timer = evtimer_new(base, stream_tick, s);
                if (!s->timer)
                        abort();
                evhttp_add_header(out, "Content-Type", "text/event-stream");
                evhttp_add_header(out, "Cache-Control", "no-cache");
                evhttp_send_reply_start(req, 200, "OK");
                evhttp_connection_set_closecb(evhttp_request_get_connection(req), stream_closed, s);
                event_add(s->timer, &interval);
                return;
        }
        reply = evbuffer_new();
        if (!reply)
                abort();
        evbuffer_add_reference(reply, reply_body, sizeof(reply_body) - 1, NULL, NULL);
        evhttp_add_header(out, "Content-Type", "application/json");
        evhttp_send_reply(req, 200, "OK", reply);
        evbuffer_free(reply);
}

/* Streams may be open: leave without tearing them down one by one. */
static void on_term(evutil_socket_t fd, short what, void *userdata) {
        _exit(0);
}

int main(int argc, char **argv) {
        struct evhttp_bound_socket *bound;
        struct event_config *cfg;
        struct event *term;
        struct evhttp *http;
        unsigned long port = 0, us;
        struct sockaddr_storage ss;
        ev_socklen_t sl = sizeof(ss);
        int i;

        for (i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
                        port = strtoul(argv[++i], NULL, 10);
                else if (strcmp(argv[i], "--chunks") == 0 && i + 1 < argc)
                        chunks = (unsigned)strtoul(argv[++i], NULL, 10);
                else if (strcmp(argv[i], "--interval-us") == 0 && i + 1 < argc) {
                        us = strtoul(argv[++i], NULL, 10);
                        interval.tv_sec = (time_t)(us / 1000000);
                        interval.tv_usec = (suseconds_t)(us % 1000000);
                } else {
                        fprintf(stderr, "usage: %s [--port N] [--chunks N] [--interval-us N]\n", argv[0]);
                        return 2;
                }
        }
        signal(SIGPIPE, SIG_IGN);
        /* Precise timers (timerfd): the stream's --interval-us as asked,
         * not rounded up to the next few milliseconds. */
        cfg = event_config_new();
        if (cfg)
                event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
        base = cfg ? event_base_new_with_config(cfg) : NULL;
        if (cfg)
                event_config_free(cfg);
        http = base ? evhttp_new(base) : NULL;
        if (!http) {
                fprintf(stderr, "proxy-upstream: cannot create the event loop\n");
                return 1;
        }
        evhttp_set_allowed_methods(http, EVHTTP_REQ_POST | EVHTTP_REQ_GET);
        evhttp_set_gencb(http, handle, NULL);
        bound = evhttp_bind_socket_with_handle(http, "127.0.0.1", (ev_uint16_t)port);
        if (!bound) {
                fprintf(stderr, "proxy-upstream: cannot listen on 127.0.0.1:%lu: %s\n", port,
                        strerror(errno));
                return 1;
        }
        if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) < 0)
                return 1;
        printf("port=%u\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
        fflush(stdout);
        term = evsignal_new(base, SIGTERM, on_term, NULL);
        event_add(term, NULL);
        event_base_dispatch(base);
        event_free(term);
        evhttp_free(http);
        event_base_free(base);
        return 0;
}
