/* SPDX-License-Identifier: MIT */
/*
 * io.tokenbudget.admin.Classes: what the estimator learned per task class
 * (daemon/core/estimator.h) and how good its predictions were, for everyone
 * (non-admins: their own uid's classes only, as in Status and History).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "varlink-names.h"

/* The most classes one reply holds (a class is about 400 bytes of JSON). */
#define CLASSES_MAX 10000

enum { CLASSES_UID };
static const VarlinkField classes_fields[] = {
        [CLASSES_UID] = {VL_IN_ADMIN_CLASSES_UID, VARLINK_FIELD_INT, true, UINT32_MAX - 1},
};

static json_object *blocks_json(const EstimatorMetrics *m) {
        json_object *a = json_object_new_array_ext(ESTIMATOR_BLOCK_SIZES);

        for (size_t i = 0; a && i < ESTIMATOR_BLOCK_SIZES; i++) {
                const EstimatorBlockMetrics *b = &m->blocks[i];
                json_object *o = json_object_new_object();
                int r;

                r = json_add(o, VL_FIELD_ADMIN_CLASS_BLOCKS_SIZE, json_u64(b->block_size));
                r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_BLOCKS_BLOCKS, json_u64(b->n_blocks));
                r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_BLOCKS_MEDIAN, json_object_new_double(b->median));
                r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_BLOCKS_P90, json_object_new_double(b->p90));
                if (r < 0 || json_append(a, o) < 0) {
                        if (r < 0)
                                json_object_put(o);
                        json_object_put(a);
                        return NULL;
                }
        }
        return a;
}

static json_object *class_json(const EstimatorTable *t, const EstimatorClass *c, uint64_t now) {
        json_object *o = json_object_new_object();
        EstimatorClassState st;
        EstimatorPrediction p;
        EstimatorMetrics m;
        int r;

        estimator_class_state(c, &st);
        estimator_class_metrics(c, &m);
        (void)estimator_predict(t, estimator_class_uid(c), estimator_class_name(c), 0, &p);
        r = json_add(o, VL_FIELD_ADMIN_CLASS_UID, json_u64(estimator_class_uid(c)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_CLASS, json_object_new_string(estimator_class_name(c)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_SAMPLES, json_u64(p.samples));
        r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_PREDICTED, json_u64(p.predicted_total));
        r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_PREDICTED_OUTPUT, json_u64(p.predicted_output));
        r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_PREDICTIONS, json_u64(m.n_predicted));
        if (m.n_predicted > 0) {
                r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_WAPE, json_object_new_double(m.wape));
                r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_BIAS, json_object_new_double(m.bias));
        }
        r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_BLOCKS, blocks_json(&m));
        if (p.ratio_q > 0)
                r = r ?: json_add(o, VL_FIELD_ADMIN_CLASS_RATIO_P95, json_object_new_double(p.ratio_q));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_CLASS_IDLE_USEC,
                                json_u64(now > st.last_seen_usec ? now - st.last_seen_usec : 0));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

typedef struct ClassRef {
        uint32_t uid;
        const char *name;
        const EstimatorClass *c;
} ClassRef;

static int class_ref_cmp(const void *a, const void *b) {
        const ClassRef *x = a, *y = b;

        if (x->uid != y->uid)
                return x->uid < y->uid ? -1 : 1;
        return strcmp(x->name, y->name);
}

static int method_classes(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        const Identity *caller = call_identity(call);
        const EstimatorTable *t = budget_estimator(ctx->budget);
        bool filter = v[CLASSES_UID].present;
        uint32_t uid = filter ? (uint32_t)v[CLASSES_UID].i : 0;
        _cleanup_free_ ClassRef *refs = NULL;
        json_object *o, *classes;
        size_t n = 0, cap = estimator_table_size(t);
        bool truncated = false;
        int r;

        if (!identity_is_admin(caller)) {
                if (filter && uid != caller->uid)
                        return call_error(call, VL_ERROR_SERVICE_PERMISSION_DENIED, NULL);
                filter = true;
                uid = caller->uid;
        }
        refs = calloc(cap ?: 1, sizeof(*refs));
        if (!refs)
                return -ENOMEM;
        for (const EstimatorClass *c = estimator_table_next(t, NULL); c && n < cap;
             c = estimator_table_next(t, c))
                if (!filter || estimator_class_uid(c) == uid)
                        refs[n++] = (ClassRef){estimator_class_uid(c), estimator_class_name(c), c};
        qsort(refs, n, sizeof(*refs), class_ref_cmp);
        if (n > CLASSES_MAX) {
                n = CLASSES_MAX;
                truncated = true;
        }
        o = json_object_new_object();
        classes = json_object_new_array_ext((int)n);
        r = classes ? 0 : -ENOMEM;
        for (size_t i = 0; r == 0 && i < n; i++)
                r = json_append(classes, class_json(t, refs[i].c, now));
        r = r ?: json_add(o, VL_OUT_ADMIN_CLASSES_CLASSES, json_object_get(classes));
        r = r ?: json_add(o, VL_OUT_ADMIN_CLASSES_TRUNCATED, json_object_new_boolean(truncated));
        json_object_put(classes);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_reply(call, o);
}

const Method classes_methods[] = {
        METHOD(VL_METHOD_ADMIN_CLASSES, method_classes, classes_fields, false),
};
const size_t classes_n_methods = ELEMENTSOF(classes_methods);
