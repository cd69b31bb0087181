/* SPDX-License-Identifier: MIT */
/* Method dispatch (see dispatch.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "dispatch.h"
#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "varlink-names.h"

static const struct {
        const Method *methods;
        const size_t *n_methods;
} tables[] = {
        {service_methods, &service_n_methods}, {agent_methods, &agent_n_methods},
        {admin_methods, &admin_n_methods},     {history_methods, &history_n_methods},
        {classes_methods, &classes_n_methods}, {estimate_methods, &estimate_n_methods},
};

static const Method *method_find(const char *name) {
        for (size_t t = 0; t < ELEMENTSOF(tables); t++)
                for (size_t i = 0; i < *tables[t].n_methods; i++)
                        if (strcmp(tables[t].methods[i].name, name) == 0)
                                return &tables[t].methods[i];
        return NULL;
}

/* MethodNotFound for a method of an interface we serve, else InterfaceNotFound. */
static int error_not_found(Call *call, const char *method) {
        json_object *o = json_object_new_object();
        size_t interface_len = strlen(method);
        bool known_interface = false;
        int r;

        if (varlink_method_split(method, &interface_len) == 0)
                for (size_t i = 0; varlink_interfaces[i]; i++)
                        if (strlen(varlink_interfaces[i]) == interface_len &&
                            strncmp(varlink_interfaces[i], method, interface_len) == 0)
                                known_interface = true;
        if (known_interface)
                r = json_add(o, VL_FIELD_SERVICE_METHOD_NOT_FOUND_METHOD, json_object_new_string(method));
        else
                r = json_add(o, VL_FIELD_SERVICE_INTERFACE_NOT_FOUND_INTERFACE,
                             json_object_new_string_len(method, (int)interface_len));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call,
                          known_interface ? VL_ERROR_SERVICE_METHOD_NOT_FOUND
                                          : VL_ERROR_SERVICE_INTERFACE_NOT_FOUND,
                          o);
}

/* After the parameters passed their table: who may call, then the handler. */
static int dispatch_validated(const DispatchContext *ctx, Call *call, const Method *m,
                              const VarlinkValue *values, uint64_t now) {
        if (m->admin && !identity_is_admin(call_identity(call)))
                return call_error(call, VL_ERROR_SERVICE_PERMISSION_DENIED, NULL);
        return m->handler(ctx, call, values, now);
}

int dispatch_call(void *context, Call *call, const VarlinkCall *message, uint64_t now) {
        VarlinkValue values[METHOD_FIELDS_MAX];
        const char *bad = NULL;
        const Method *m = method_find(message->method);

        if (!m)
                return error_not_found(call, message->method);
        if (message->upgrade)
                return call_invalid_parameter(call, "upgrade");
        if (varlink_params_parse(message->parameters, m->fields, m->n_fields, values, &bad) < 0)
                return call_invalid_parameter(call, bad);
        return dispatch_validated(context, call, m, values, now);
}

/* The same checks in the same order as dispatch_call(): the flat parser
 * guarantees identical values and identical bad-parameter names. */
int dispatch_flat_call(void *context, Call *call, const VarlinkFlatCall *message, uint64_t now) {
        VarlinkValue values[METHOD_FIELDS_MAX];
        const char *bad = NULL;
        const Method *m = method_find(message->method);

        if (!m)
                return error_not_found(call, message->method);
        if (message->upgrade)
                return call_invalid_parameter(call, "upgrade");
        if (varlink_flat_params_parse(message, m->fields, m->n_fields, values, &bad) < 0)
                return call_invalid_parameter(call, bad);
        return dispatch_validated(context, call, m, values, now);
}
