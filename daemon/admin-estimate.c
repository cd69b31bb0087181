/* SPDX-License-Identifier: MIT */
/*
 * io.tokenbudget.admin.Estimate (issue 13, point 5): what a project of N
 * tasks of a class will use, from what the estimator learned of that class
 * (estimator_project(), daemon/core/estimator.h: the prediction, and a
 * central 90% interval calibrated on the class's own history of blocks),
 * and what it costs at a model's prices (the configuration's prices group).
 * Everyone may call it for their own uid's classes; another uid is for
 * admins (as Classes). It only reads: nothing is reserved or learned.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "config.h"
#include "estimator.h"
#include "json-util.h"
#include "ledger.h"
#include "macro.h"
#include "method.h"
#include "varlink-names.h"

/* The most tasks one Estimate projects: far beyond any project. tasks x a
 * task's tokens (each below LEDGER_TOKENS_MAX, 10^12) can still pass
 * INT64_MAX: the reply's integers saturate there. */
#define ESTIMATE_TASKS_MAX 1000000000
/* The interval Estimate answers: the central 90%. */
#define ESTIMATE_COVERAGE_PERMILLE 900

enum { EST_CLASS, EST_UID, EST_TASKS, EST_PROMPT_TOKENS, EST_MODEL };
static const VarlinkField estimate_fields[] = {
        [EST_CLASS] = {VL_IN_ADMIN_ESTIMATE_CLASS, VARLINK_FIELD_STRING, false, ESTIMATOR_NAME_MAX},
        [EST_UID] = {VL_IN_ADMIN_ESTIMATE_UID, VARLINK_FIELD_INT, true, UINT32_MAX - 1},
        [EST_TASKS] = {VL_IN_ADMIN_ESTIMATE_TASKS, VARLINK_FIELD_INT, true, ESTIMATE_TASKS_MAX},
        [EST_PROMPT_TOKENS] = {VL_IN_ADMIN_ESTIMATE_PROMPT_TOKENS, VARLINK_FIELD_INT, true,
                               LEDGER_TOKENS_MAX - 1},
        [EST_MODEL] = {VL_IN_ADMIN_ESTIMATE_MODEL, VARLINK_FIELD_STRING, true, CONFIG_MODEL_NAME_MAX_BYTES},
};

/* A token count of the projection as a reply integer: rounded to the
 * nearest, never negative, saturated at INT64_MAX. */
static json_object *tokens_json(double v) {
        if (!(v > 0))
                return json_u64(0);
        if (v >= (double)INT64_MAX)
                return json_u64(INT64_MAX);
        return json_u64((uint64_t)(v + 0.5));
}

/* A float of the reply in its shortest faithful form: 15 significant
 * digits, so 0.9 is "0.9" and a price of 2.5 "2.5", not json-c's default
 * 17 digits ("0.90000000000000002"). Only finite values come here (prices
 * are 0..10^6, token counts finite). */
static json_object *float_json(double v) {
        char text[32];

        snprintf(text, sizeof(text), "%.15g", v);
        /* A float stays a float on the wire: 10 is "10.0". */
        if (!strpbrk(text, ".eEn"))
                strcat(text, ".0");
        return json_object_new_double_s(v, text);
}

static const ConfigPrice *price_find(const Config *c, const char *model) {
        for (size_t i = 0; c && i < c->n_prices; i++)
                if (strcmp(c->prices[i].model, model) == 0)
                        return &c->prices[i];
        return NULL;
}

/* Money of input and output tokens at a model's prices (per million). */
static double price_of(const ConfigPrice *p, double input, double output) {
        return input * p->input_per_million / 1e6 + output * p->output_per_million / 1e6;
}

static json_object *task_json(const EstimatorPrediction *p) {
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_FIELD_ADMIN_ESTIMATE_TASK_PREDICTED, json_u64(p->predicted_total));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_TASK_PREDICTED_OUTPUT, json_u64(p->predicted_output));
        return r < 0 ? json_object_put(o), NULL : o;
}

static json_object *interval_json(const EstimatorProject *p) {
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_LOW, tokens_json(p->total_low));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_HIGH, tokens_json(p->total_high));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_OUTPUT_LOW, tokens_json(p->output_low));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_OUTPUT_HIGH, tokens_json(p->output_high));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_COVERAGE,
                                float_json(ESTIMATE_COVERAGE_PERMILLE / 1000.0));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_BLOCK_SIZE, json_u64(p->basis_block_size));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_BLOCKS, json_u64(p->basis_blocks));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_INTERVAL_SCALED,
                                json_object_new_boolean(p->basis_scaled));
        return r < 0 ? json_object_put(o), NULL : o;
}

/* Why a projection has no interval, in words: the history it lacked. */
static json_object *no_interval_json(const EstimatorProject *p) {
        char text[160];

        if (p->basis_block_size <= 1)
                snprintf(text, sizeof(text),
                         "fewer than %u predictions checked against their allocations yet (%" PRIu32 ")",
                         ESTIMATOR_PROJECT_MIN_BLOCKS, p->basis_blocks);
        else
                snprintf(text, sizeof(text), "fewer than %u blocks of %" PRIu32 " seen (%" PRIu32 ")",
                         ESTIMATOR_PROJECT_MIN_BLOCKS, p->basis_block_size, p->basis_blocks);
        return json_object_new_string(text);
}

/* The cost object; the input part is what the total adds to the output, the
 * same at both ends of the interval. */
static json_object *cost_json(const ConfigPrice *price, const char *currency, const EstimatorProject *p) {
        double input = p->expected_total - p->expected_output;
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_FIELD_ADMIN_ESTIMATE_COST_MODEL, json_object_new_string(price->model));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_COST_CURRENCY, json_object_new_string(currency));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_COST_INPUT_PER_MILLION,
                                float_json(price->input_per_million));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_COST_OUTPUT_PER_MILLION,
                                float_json(price->output_per_million));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_COST_EXPECTED,
                                float_json(price_of(price, input, p->expected_output)));
        if (p->has_interval) {
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_COST_LOW,
                                        float_json(price_of(price, input, p->output_low)));
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_ESTIMATE_COST_HIGH,
                                        float_json(price_of(price, input, p->output_high)));
        }
        return r < 0 ? json_object_put(o), NULL : o;
}

/* cost, or noCost, when a model was asked for. */
static int add_cost(json_object *o, const Config *config, const char *model, const EstimatorProject *p) {
        const ConfigPrice *price = price_find(config, model);
        char text[CONFIG_MODEL_NAME_MAX_BYTES + 64];

        if (price)
                return json_add(o, VL_OUT_ADMIN_ESTIMATE_COST,
                                cost_json(price, config->price_currency ?: "", p));
        snprintf(text, sizeof(text), "no price configured for model '%s'", model);
        return json_add(o, VL_OUT_ADMIN_ESTIMATE_NO_COST, json_object_new_string(text));
}

/* tasks x a task's tokens, saturated (tasks <= 10^9, tokens < 2^64). */
static uint64_t times_tasks(uint64_t tasks, uint64_t tokens) {
        uint64_t v;

        return __builtin_mul_overflow(tasks, tokens, &v) ? UINT64_MAX : v;
}

static json_object *estimate_json(const DispatchContext *ctx, uint32_t uid, const char *cls, uint64_t prompt,
                                  const char *model, const EstimatorProject *p) {
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_OUT_ADMIN_ESTIMATE_UID, json_u64(uid));
        r = r ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_CLASS, json_object_new_string(cls));
        r = r ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_TASKS, json_u64(p->tasks));
        if (prompt > 0)
                r = r ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_PROMPT_TOKENS, json_u64(prompt));
        r = r ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_SAMPLES, json_u64(p->per_task.samples));
        r = r ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_PER_TASK, task_json(&p->per_task));
        /* Exact integers (tasks x the per-task prediction), not the rounded doubles. */
        r = r
                    ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_EXPECTED,
                                json_u64(times_tasks(p->tasks, p->per_task.predicted_total)));
        r = r
                    ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_EXPECTED_OUTPUT,
                                json_u64(times_tasks(p->tasks, p->per_task.predicted_output)));
        if (p->has_interval)
                r = r ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_INTERVAL, interval_json(p));
        else
                r = r ?: json_add(o, VL_OUT_ADMIN_ESTIMATE_NO_INTERVAL, no_interval_json(p));
        if (model)
                r = r ?: add_cost(o, ctx->config, model, p);
        return r < 0 ? json_object_put(o), NULL : o;
}

static int error_unknown_class(Call *call, const char *cls) {
        json_object *o = json_object_new_object();

        if (json_add(o, VL_FIELD_ADMIN_UNKNOWN_CLASS_CLASS, json_object_new_string(cls)) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        return call_error(call, VL_ERROR_ADMIN_UNKNOWN_CLASS, o);
}

/* The core cannot project (-ENOSYS: built without it): said, not a dropped peer. */
static int error_not_implemented(Call *call) {
        json_object *o = json_object_new_object();

        if (json_add(o, VL_FIELD_SERVICE_METHOD_NOT_IMPLEMENTED_METHOD,
                     json_object_new_string(VL_METHOD_ADMIN_ESTIMATE)) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        return call_error(call, VL_ERROR_SERVICE_METHOD_NOT_IMPLEMENTED, o);
}

static int method_estimate(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        const Identity *caller = call_identity(call);
        const char *cls = v[EST_CLASS].s, *model = v[EST_MODEL].present ? v[EST_MODEL].s : NULL;
        uint32_t uid = v[EST_UID].present ? (uint32_t)v[EST_UID].i : caller->uid;
        uint64_t tasks = v[EST_TASKS].present ? (uint64_t)v[EST_TASKS].i : 1,
                 prompt = v[EST_PROMPT_TOKENS].present ? (uint64_t)v[EST_PROMPT_TOKENS].i : 0;
        EstimatorProject p;
        json_object *o;
        int r;

        if (uid != caller->uid && !identity_is_admin(caller))
                return call_error(call, VL_ERROR_SERVICE_PERMISSION_DENIED, NULL);
        if (!*cls)
                return call_invalid_parameter(call, VL_IN_ADMIN_ESTIMATE_CLASS);
        if (tasks == 0)
                return call_invalid_parameter(call, VL_IN_ADMIN_ESTIMATE_TASKS);
        if (model && !*model)
                return call_invalid_parameter(call, VL_IN_ADMIN_ESTIMATE_MODEL);
        r = estimator_project(budget_estimator(ctx->budget), uid, cls, tasks, prompt,
                              ESTIMATE_COVERAGE_PERMILLE, &p);
        if (r == -ENOENT)
                return error_unknown_class(call, cls);
        if (r == -EINVAL)
                return call_invalid_parameter(call, VL_IN_ADMIN_ESTIMATE_CLASS);
        if (r < 0)
                return r == -ENOMEM ? r : error_not_implemented(call);
        o = estimate_json(ctx, uid, cls, prompt, model, &p);
        if (!o)
                return -ENOMEM;
        return call_reply(call, o);
}

const Method estimate_methods[] = {
        METHOD(VL_METHOD_ADMIN_ESTIMATE, method_estimate, estimate_fields, false),
};
const size_t estimate_n_methods = ELEMENTSOF(estimate_methods);
