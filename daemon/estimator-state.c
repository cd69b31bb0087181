/* SPDX-License-Identifier: MIT */
/*
 * An estimator class's state as the durable ledger keeps it: JSON text with
 * every number of EstimatorClassState by name ("v" its version), so that a
 * later daemon can read what an earlier one wrote and a changed struct does
 * not silently misread a blob. Doubles go through json-c's "%.17g", which
 * reads back to the same value. estimator_restore() checks the ranges; here
 * only the shape is checked. The previous version still reads (see
 * STATE_VERSION).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "estimator-state.h"
#include "json-util.h"

/* 2 added per block size m0 and the ring of block ratios (project
 * intervals); a version 1 state still reads, with m0 0 (the block in
 * progress keeps no ratio) and the ratio rings empty. */
#define STATE_VERSION     2
#define STATE_VERSION_OLD 1

static json_object *doubles(const double *v, size_t n) {
        json_object *a = json_object_new_array_ext((int)n);

        for (size_t i = 0; a && i < n; i++)
                if (json_append(a, json_object_new_double(v[i])) < 0) {
                        json_object_put(a);
                        return NULL;
                }
        return a;
}

static json_object *stat_json(const EstimatorStat *s) {
        json_object *a = json_object_new_array_ext(3);

        if (json_append(a, json_object_new_double(s->mean)) < 0 ||
            json_append(a, json_object_new_double(s->tail)) < 0 ||
            json_append(a, json_u64(s->samples)) < 0) {
                json_object_put(a);
                return NULL;
        }
        return a;
}

char *estimator_state_to_json(const EstimatorClassState *s) {
        json_object *o = json_object_new_object(), *buckets = json_object_new_array_ext(ESTIMATOR_BUCKETS),
                    *blocks = json_object_new_array_ext(ESTIMATOR_BLOCK_SIZES);
        const double err[3] = {s->err_abs, s->err_pred, s->err_act};
        char *text = NULL;
        int r;

        r = json_add(o, "v", json_object_new_int(STATE_VERSION));
        r = r ?: json_add(o, "output", stat_json(&s->output));
        r = r ?: json_add(o, "total", stat_json(&s->total));
        for (size_t i = 0; r == 0 && i < ESTIMATOR_BUCKETS; i++)
                r = json_append(buckets, stat_json(&s->bucket[i]));
        r = r ?: json_add(o, "buckets", json_object_get(buckets));
        r = r ?: json_add(o, "ratio", doubles(s->ratio_hist, ESTIMATOR_RATIO_BINS));
        r = r ?: json_add(o, "err", doubles(err, 3));
        r = r ?: json_add(o, "predicted", json_u64(s->n_predicted));
        for (size_t i = 0; r == 0 && i < ESTIMATOR_BLOCK_SIZES; i++) {
                const EstimatorBlocks *b = &s->blocks[i];
                json_object *bo = json_object_new_object();

                r = json_add(bo, "sumPredicted", json_object_new_double(b->sum_pred));
                r = r ?: json_add(bo, "sumActual", json_object_new_double(b->sum_act));
                r = r ?: json_add(bo, "count", json_u64(b->count));
                r = r ?: json_add(bo, "kept", json_u64(b->n_errors));
                r = r ?: json_add(bo, "next", json_u64(b->next));
                r = r ?: json_add(bo, "errors", doubles(b->errors, ESTIMATOR_BLOCK_RING));
                r = r ?: json_add(bo, "m0", json_object_new_double(b->m0));
                r = r ?: json_add(bo, "ratiosKept", json_u64(b->n_ratios));
                r = r ?: json_add(bo, "ratiosNext", json_u64(b->next_ratio));
                r = r ?: json_add(bo, "ratios", doubles(b->ratios, ESTIMATOR_BLOCK_RING));
                r = r ?: json_append(blocks, json_object_get(bo));
                json_object_put(bo);
        }
        r = r ?: json_add(o, "blocks", json_object_get(blocks));
        if (r == 0) {
                const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);

                text = t ? strdup(t) : NULL;
        }
        json_object_put(buckets);
        json_object_put(blocks);
        json_object_put(o);
        return text;
}

static int get_doubles(json_object *a, double *out, size_t n) {
        if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) != n)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(a, i);

                if (!json_object_is_type(e, json_type_double) && !json_object_is_type(e, json_type_int))
                        return -EBADMSG;
                out[i] = json_object_get_double(e);
        }
        return 0;
}

static int get_u64(json_object *e, uint64_t *ret) {
        int64_t v;

        if (!json_object_is_type(e, json_type_int))
                return -EBADMSG;
        v = json_object_get_int64(e);
        if (v < 0)
                return -EBADMSG;
        *ret = (uint64_t)v;
        return 0;
}

static int get_u32(json_object *e, uint32_t *ret) {
        uint64_t v;
        int r = get_u64(e, &v);

        if (r < 0 || v > UINT32_MAX)
                return -EBADMSG;
        *ret = (uint32_t)v;
        return 0;
}

static int get_stat(json_object *a, EstimatorStat *ret) {
        double mt[2];

        if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) != 3)
                return -EBADMSG;
        for (size_t i = 0; i < 2; i++) {
                json_object *e = json_object_array_get_idx(a, i);

                if (!json_object_is_type(e, json_type_double) && !json_object_is_type(e, json_type_int))
                        return -EBADMSG;
                mt[i] = json_object_get_double(e);
        }
        ret->mean = mt[0];
        ret->tail = mt[1];
        return get_u64(json_object_array_get_idx(a, 2), &ret->samples);
}

static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;

        return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int get_double(json_object *v, double *ret) {
        if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
                return -EBADMSG;
        *ret = json_object_get_double(v);
        return 0;
}

/* One block size's object; version 1 has no m0 and no ratios. */
static int get_blocks(json_object *bo, int version, EstimatorBlocks *b) {
        if (!json_object_is_type(bo, json_type_object))
                return -EBADMSG;
        if (get_double(member(bo, "sumPredicted"), &b->sum_pred) < 0 ||
            get_double(member(bo, "sumActual"), &b->sum_act) < 0 ||
            get_u32(member(bo, "count"), &b->count) < 0 || get_u32(member(bo, "kept"), &b->n_errors) < 0 ||
            get_u32(member(bo, "next"), &b->next) < 0 ||
            get_doubles(member(bo, "errors"), b->errors, ESTIMATOR_BLOCK_RING) < 0)
                return -EBADMSG;
        if (version == STATE_VERSION_OLD)
                return 0;
        if (get_double(member(bo, "m0"), &b->m0) < 0 ||
            get_u32(member(bo, "ratiosKept"), &b->n_ratios) < 0 ||
            get_u32(member(bo, "ratiosNext"), &b->next_ratio) < 0 ||
            get_doubles(member(bo, "ratios"), b->ratios, ESTIMATOR_BLOCK_RING) < 0)
                return -EBADMSG;
        return 0;
}

int estimator_state_from_json(const char *text, EstimatorClassState *ret) {
        json_object *o = text ? json_tokener_parse(text) : NULL, *v, *a;
        EstimatorClassState s = {};
        double err[3];
        int r = -EBADMSG, version;

        if (!json_object_is_type(o, json_type_object))
                goto done;
        v = member(o, "v");
        if (!json_object_is_type(v, json_type_int))
                goto done;
        version = json_object_get_int(v);
        if (version != STATE_VERSION && version != STATE_VERSION_OLD)
                goto done;
        if (get_stat(member(o, "output"), &s.output) < 0 || get_stat(member(o, "total"), &s.total) < 0)
                goto done;
        a = member(o, "buckets");
        if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) != ESTIMATOR_BUCKETS)
                goto done;
        for (size_t i = 0; i < ESTIMATOR_BUCKETS; i++)
                if (get_stat(json_object_array_get_idx(a, i), &s.bucket[i]) < 0)
                        goto done;
        if (get_doubles(member(o, "ratio"), s.ratio_hist, ESTIMATOR_RATIO_BINS) < 0 ||
            get_doubles(member(o, "err"), err, 3) < 0 || get_u64(member(o, "predicted"), &s.n_predicted) < 0)
                goto done;
        s.err_abs = err[0];
        s.err_pred = err[1];
        s.err_act = err[2];
        a = member(o, "blocks");
        if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) != ESTIMATOR_BLOCK_SIZES)
                goto done;
        for (size_t i = 0; i < ESTIMATOR_BLOCK_SIZES; i++)
                if (get_blocks(json_object_array_get_idx(a, i), version, &s.blocks[i]) < 0)
                        goto done;
        *ret = s;
        r = 0;
done:
        json_object_put(o);
        return r;
}
