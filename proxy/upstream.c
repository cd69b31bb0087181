/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * libcurl's multi interface on the proxy's event_base: curl tells us which
 * sockets to watch (sock_cb) and when to wake it (timer_cb); libevent calls
 * back and we hand the readiness to curl_multi_socket_action(), then collect
 * the finished transfers (check_done). Written after curl's
 * docs/examples/hiperfifo.c, with per-transfer callbacks and pause/resume for
 * flow control. See upstream.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "macro.h"
#include "upstream.h"

/* Response headers kept per transfer: a response with more is refused (a
 * header section of 64 KiB at most takes far fewer). */
#define UPSTREAM_HEADERS_MAX 256

struct Upstream {
        struct event_base *base;
        CURLM *multi;
        struct event *timer;
        int running;
        unsigned active;
};

struct UpstreamTransfer {
        Upstream *upstream;
        CURL *easy;
        struct curl_slist *headers;
        char *body;
        char *url;
        UpstreamCallbacks cb;
        void *userdata;
        char **resp_headers;
        size_t n_resp_headers;
        bool response_sent;
        bool paused;
        bool aborted; /* a callback said stop: its error is ours, not the upstream's */
        char error[CURL_ERROR_SIZE];
};

typedef struct UpstreamSocket {
        Upstream *upstream;
        struct event *ev;
} UpstreamSocket;

int upstream_target_parse(const char *url, UpstreamTarget *ret, const char **ret_reason) {
        UpstreamTarget t = {};

        if (strncmp(url, "unix:", 5) == 0) {
                const char *path = url + 5, *base = strstr(path, ":/");
                size_t n = base ? (size_t)(base - path) : strlen(path);

                if (n == 0 || path[0] != '/') {
                        *ret_reason =
                                "a unix: upstream needs an absolute socket path (unix:/run/x.sock[:/base])";
                        return -EINVAL;
                }
                if (n >= 108) {
                        *ret_reason = "the unix: socket path is longer than 107 bytes";
                        return -EINVAL;
                }
                t.unix_path = strndup(path, n);
                if (asprintf(&t.base_url, "http://localhost%s", base ? base + 1 : "") < 0)
                        t.base_url = NULL;
        } else if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
                const char *host = strstr(url, "//") + 2;
                if (*host == '\0' || *host == '/') {
                        *ret_reason = "the upstream URL has no host";
                        return -EINVAL;
                }
                t.base_url = strdup(url);
        } else {
                *ret_reason =
                        "the upstream must be http://HOST[:PORT][/base], https://... or unix:PATH[:/base]";
                return -EINVAL;
        }
        if (!t.base_url || (strncmp(url, "unix:", 5) == 0 && !t.unix_path)) {
                upstream_target_done(&t);
                *ret_reason = "out of memory";
                return -ENOMEM;
        }
        size_t len = strlen(t.base_url);
        while (len > 0 && t.base_url[len - 1] == '/' && strstr(t.base_url, "//") + 2 < t.base_url + len - 1)
                t.base_url[--len] = '\0';
        *ret = t;
        return 0;
}

void upstream_target_done(UpstreamTarget *t) {
        t->base_url = mfree(t->base_url);
        t->unix_path = mfree(t->unix_path);
}

static void transfer_free(UpstreamTransfer *t) {
        if (!t)
                return;
        if (t->easy) {
                curl_multi_remove_handle(t->upstream->multi, t->easy);
                curl_easy_cleanup(t->easy);
                t->upstream->active--;
        }
        curl_slist_free_all(t->headers);
        for (size_t i = 0; i < t->n_resp_headers; i++)
                free(t->resp_headers[i]);
        free(t->resp_headers);
        free(t->body);
        free(t->url);
        free(t);
}

static int transfer_send_response(UpstreamTransfer *t) {
        long status = 0;

        if (t->response_sent)
                return 0;
        t->response_sent = true;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        return t->cb.response(t, status, t->resp_headers, t->n_resp_headers, t->userdata);
}

static void check_done(Upstream *u) {
        CURLMsg *msg;
        int left;

        while ((msg = curl_multi_info_read(u->multi, &left))) {
                UpstreamTransfer *t = NULL;
                int error = 0;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
                if (msg->data.result != CURLE_OK) {
                        if (!t->error[0])
                                snprintf(t->error, sizeof(t->error), "%s",
                                         curl_easy_strerror(msg->data.result));
                        error = msg->data.result == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
                                : t->aborted                                 ? -ECANCELED
                                                                             : -EIO;
                } else if (transfer_send_response(t) < 0)
                        error = -ECANCELED;
                t->cb.done(t, error, t->error, t->userdata);
                transfer_free(t);
        }
}

static void socket_event_cb(evutil_socket_t fd, short what, void *userdata) {
        Upstream *u = userdata;
        int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);

        curl_multi_socket_action(u->multi, fd, action, &u->running);
        check_done(u);
        if (u->running <= 0)
                evtimer_del(u->timer);
}

static void timer_event_cb(evutil_socket_t fd, short what, void *userdata) {
        Upstream *u = userdata;

        curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &u->running);
        check_done(u);
}

static int multi_timer_cb(CURLM *multi, long timeout_ms, void *userdata) {
        Upstream *u = userdata;

        if (timeout_ms < 0)
                return evtimer_del(u->timer);
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        return evtimer_add(u->timer, &tv);
}

static int multi_socket_cb(CURL *easy, curl_socket_t s, int what, void *userdata, void *socketp) {
        Upstream *u = userdata;
        UpstreamSocket *us = socketp;

        if (what == CURL_POLL_REMOVE) {
                if (us) {
                        event_free(us->ev);
                        free(us);
                        curl_multi_assign(u->multi, s, NULL);
                }
                return 0;
        }
        if (!us) {
                us = calloc(1, sizeof(*us));
                if (!us)
                        return -1;
                us->upstream = u;
                curl_multi_assign(u->multi, s, us);
        } else if (us->ev) {
                event_free(us->ev);
                us->ev = NULL;
        }
        short events =
                ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST;
        us->ev = event_new(u->base, s, events, socket_event_cb, u);
        if (!us->ev || event_add(us->ev, NULL) < 0)
                return -1;
        return 0;
}

Upstream *upstream_new(struct event_base *base) {
        Upstream *u = calloc(1, sizeof(*u));

        if (!u)
                return NULL;
        u->base = base;
        u->multi = curl_multi_init();
        u->timer = evtimer_new(base, timer_event_cb, u);
        if (!u->multi || !u->timer)
                return upstream_free(u);
        curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, multi_socket_cb);
        curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
        curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
        curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
        return u;
}

Upstream *upstream_free(Upstream *u) {
        if (!u)
                return NULL;
        if (u->multi)
                curl_multi_cleanup(u->multi);
        if (u->timer)
                event_free(u->timer);
        free(u);
        return NULL;
}

unsigned upstream_active(const Upstream *u) {
        return u->active;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *userdata) {
        UpstreamTransfer *t = userdata;
        size_t len = size * nmemb, n = len;

        while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r'))
                n--;
        if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
                /* A new status line (after a 100 Continue, say): the headers start again. */
                for (size_t i = 0; i < t->n_resp_headers; i++)
                        free(t->resp_headers[i]);
                t->n_resp_headers = 0;
                return len;
        }
        if (n == 0 || data[0] == ' ' || data[0] == '\t') /* the end, or an obsolete folded line */
                return len;
        if (t->n_resp_headers >= UPSTREAM_HEADERS_MAX) {
                snprintf(t->error, sizeof(t->error), "the upstream sent more than %d headers",
                         UPSTREAM_HEADERS_MAX);
                return 0;
        }
        if (!t->resp_headers) {
                t->resp_headers = calloc(UPSTREAM_HEADERS_MAX, sizeof(char *));
                if (!t->resp_headers)
                        return 0;
        }
        t->resp_headers[t->n_resp_headers] = strndup(data, n);
        if (!t->resp_headers[t->n_resp_headers])
                return 0;
        t->n_resp_headers++;
        return len;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata) {
        UpstreamTransfer *t = userdata;
        size_t len = size * nmemb, r;

        if (transfer_send_response(t) < 0) {
                t->aborted = true;
                return 0;
        }
        r = t->cb.body(t, data, len, t->userdata);
        if (r == UPSTREAM_PAUSE) {
                t->paused = true;
                return CURL_WRITEFUNC_PAUSE;
        }
        if (r != len)
                t->aborted = true;
        return r == len ? len : 0;
}

int upstream_transfer_start(Upstream *u, const UpstreamTarget *target, UpstreamRequest *req,
                            const UpstreamCallbacks *cb, void *userdata, UpstreamTransfer **ret) {
        UpstreamTransfer *t = calloc(1, sizeof(*t));

        if (!t) {
                req->body = mfree(req->body);
                return -ENOMEM;
        }
        t->upstream = u;
        t->cb = *cb;
        t->userdata = userdata;
        t->body = TAKE_PTR(req->body);
        if (asprintf(&t->url, "%s%s", target->base_url, req->path) < 0) {
                t->url = NULL;
                transfer_free(t);
                return -ENOMEM;
        }
        for (const char *const *h = req->headers; h && *h; h++) {
                struct curl_slist *n = curl_slist_append(t->headers, *h);
                if (!n) {
                        transfer_free(t);
                        return -ENOMEM;
                }
                t->headers = n;
        }
        /* No "Expect: 100-continue" round trip; curl sets Host and Content-Length itself. */
        struct curl_slist *n = curl_slist_append(t->headers, "Expect:");
        if (!n) {
                transfer_free(t);
                return -ENOMEM;
        }
        t->headers = n;

        CURL *e = curl_easy_init();
        if (!e) {
                transfer_free(t);
                return -ENOMEM;
        }
        curl_easy_setopt(e, CURLOPT_URL, t->url);
        if (target->unix_path)
                curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, target->unix_path);
        curl_easy_setopt(e, CURLOPT_PRIVATE, t);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(req->connect_timeout_msec ? req->connect_timeout_msec : 10000));
        /* Bodies are passed on as the upstream encoded them; chunked framing is decoded. */
        curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
        if (strcmp(req->method, "GET") == 0)
                curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        else if (strcmp(req->method, "HEAD") == 0)
                curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        else {
                curl_easy_setopt(e, CURLOPT_POST, 1L);
                curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body ? t->body : "");
                curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(t->body ? req->body_len : 0));
                if (strcmp(req->method, "POST") != 0)
                        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
        }
        if (curl_multi_add_handle(u->multi, e) != CURLM_OK) {
                curl_easy_cleanup(e);
                transfer_free(t);
                return -ENOMEM;
        }
        t->easy = e;
        u->active++;
        *ret = t;
        return 0;
}

void upstream_transfer_resume(UpstreamTransfer *t) {
        if (!t->paused)
                return;
        t->paused = false;
        curl_easy_pause(t->easy, CURLPAUSE_CONT);
}

bool upstream_transfer_paused(const UpstreamTransfer *t) {
        return t->paused;
}

UpstreamTransfer *upstream_transfer_cancel(UpstreamTransfer *t) {
        transfer_free(t);
        return NULL;
}
