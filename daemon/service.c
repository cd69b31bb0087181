/* SPDX-License-Identifier: MIT */
/* org.varlink.service: GetInfo and GetInterfaceDescription. */
#include <errno.h>

#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "tb-config.h"
#include "varlink-names.h"

static int method_get_info(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        json_object *o = json_object_new_object(), *list = json_object_new_array();
        int r = 0;

        for (size_t i = 0; varlink_interfaces[i] && r == 0; i++)
                r = json_append(list, json_object_new_string(varlink_interfaces[i]));
        r = r ?: json_add(o, VL_OUT_SERVICE_GET_INFO_VENDOR, json_object_new_string("tokenbudget"));
        r = r ?: json_add(o, VL_OUT_SERVICE_GET_INFO_PRODUCT, json_object_new_string("tokenbudgetd"));
        r = r ?: json_add(o, VL_OUT_SERVICE_GET_INFO_VERSION, json_object_new_string(TB_VERSION));
        r = r ?: json_add(o, VL_OUT_SERVICE_GET_INFO_URL, json_object_new_string("man:tokenbudgetd(8)"));
        if (r < 0) {
                json_object_put(list);
                json_object_put(o);
                return r;
        }
        r = json_add(o, VL_OUT_SERVICE_GET_INFO_INTERFACES, list);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_reply(call, o);
}

static int method_get_interface_description(const DispatchContext *ctx, Call *call, const VarlinkValue *v,
                                            uint64_t now) {
        const char *text = varlink_interface_description(v[0].s);
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o,
                     text ? VL_OUT_SERVICE_GET_INTERFACE_DESCRIPTION_DESCRIPTION
                          : VL_FIELD_SERVICE_INTERFACE_NOT_FOUND_INTERFACE,
                     json_object_new_string(text ?: v[0].s));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        if (!text)
                return call_error(call, VL_ERROR_SERVICE_INTERFACE_NOT_FOUND, o);
        return call_reply(call, o);
}

static const VarlinkField interface_fields[] = {
        {VL_IN_SERVICE_GET_INTERFACE_DESCRIPTION_INTERFACE, VARLINK_FIELD_STRING, false, 0},
};

const Method service_methods[] = {
        METHOD0(VL_METHOD_SERVICE_GET_INFO, method_get_info, false),
        METHOD(VL_METHOD_SERVICE_GET_INTERFACE_DESCRIPTION, method_get_interface_description,
               interface_fields, false),
};
const size_t service_n_methods = ELEMENTSOF(service_methods);
