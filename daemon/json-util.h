/* SPDX-License-Identifier: MIT */
/*
 * Building json-c replies where every allocation is checked: a NULL from
 * json-c (out of memory) fails the whole reply with -ENOMEM instead of
 * sending a half-built one or crashing.
 */
#pragma once

#include <errno.h>
#include <stdint.h>

#include <json-c/json.h>

static inline json_object *json_u64(uint64_t v) {
        return json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

/* Adds key: value to o; value NULL or o NULL fails (and value is freed). */
static inline int json_add(json_object *o, const char *key, json_object *value) {
        if (!o || !value || json_object_object_add(o, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

/* Appends value to array; NULL value or array fails (and value is freed). */
static inline int json_append(json_object *array, json_object *value) {
        if (!array || !value || json_object_array_add(array, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}
