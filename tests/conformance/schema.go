// SPDX-License-Identifier: MIT

// Validation of JSON values against Varlink types as varlink-go's idl package
// parses them from the daemon's own interface descriptions. This is how the
// conformance test checks that every reply and error carries exactly the
// fields, with exactly the types, that the interface declares: varlink-go
// itself silently ignores reply decoding errors, so without this a mistyped
// field would pass unnoticed. It does not check values; the checks do.

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/varlink/go/varlink/idl"
)

// decodeJSON decodes raw keeping numbers as json.Number, so integers and
// floats stay distinguishable, and rejects trailing data.
func decodeJSON(raw []byte) (interface{}, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v interface{}
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

// validateParameters checks the parameters object of a reply or an error
// (raw may be nil when the message had no "parameters") against t, which
// must be a struct type.
func validateParameters(raw []byte, t *idl.Type, iface *idl.IDL) error {
	var v interface{} = map[string]interface{}{}
	if raw != nil {
		var err error
		if v, err = decodeJSON(raw); err != nil {
			return fmt.Errorf("parameters: %v", err)
		}
		if v == nil {
			v = map[string]interface{}{}
		}
	}
	return validateValue("parameters", v, t, iface)
}

func findAlias(iface *idl.IDL, name string) *idl.Type {
	for _, a := range iface.Aliases {
		if a.Name == name {
			return a.Type
		}
	}
	return nil
}

func validateValue(path string, v interface{}, t *idl.Type, iface *idl.IDL) error {
	switch t.Kind {
	case idl.TypeBool:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want bool, got %s", path, describe(v))
		}
	case idl.TypeInt:
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want int, got %s", path, describe(v))
		}
		if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
			return fmt.Errorf("%s: want int, got number %s", path, n)
		}
	case idl.TypeFloat:
		if _, ok := v.(json.Number); !ok {
			return fmt.Errorf("%s: want float, got %s", path, describe(v))
		}
	case idl.TypeString:
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: want string, got %s", path, describe(v))
		}
	case idl.TypeObject:
		if _, ok := v.(map[string]interface{}); !ok {
			return fmt.Errorf("%s: want object, got %s", path, describe(v))
		}
	case idl.TypeMaybe:
		if v == nil {
			return nil
		}
		return validateValue(path, v, t.ElementType, iface)
	case idl.TypeArray:
		a, ok := v.([]interface{})
		if !ok {
			return fmt.Errorf("%s: want array, got %s", path, describe(v))
		}
		for i, e := range a {
			if err := validateValue(fmt.Sprintf("%s[%d]", path, i), e, t.ElementType, iface); err != nil {
				return err
			}
		}
	case idl.TypeMap:
		m, ok := v.(map[string]interface{})
		if !ok {
			return fmt.Errorf("%s: want map, got %s", path, describe(v))
		}
		for k, e := range m {
			if err := validateValue(path+"["+strconv.Quote(k)+"]", e, t.ElementType, iface); err != nil {
				return err
			}
		}
	case idl.TypeEnum:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: want enum string, got %s", path, describe(v))
		}
		for _, f := range t.Fields {
			if f.Name == s {
				return nil
			}
		}
		return fmt.Errorf("%s: %q is not a value of the enum", path, s)
	case idl.TypeStruct:
		return validateStruct(path, v, t, iface)
	case idl.TypeAlias:
		at := findAlias(iface, t.Alias)
		if at == nil {
			return fmt.Errorf("%s: type %s is not defined in %s", path, t.Alias, iface.Name)
		}
		return validateValue(path, v, at, iface)
	default:
		return fmt.Errorf("%s: unknown type kind %d", path, t.Kind)
	}
	return nil
}

// validateStruct requires every non-maybe field, allows a maybe field to be
// absent or null, and rejects keys the type does not declare.
func validateStruct(path string, v interface{}, t *idl.Type, iface *idl.IDL) error {
	m, ok := v.(map[string]interface{})
	if !ok {
		return fmt.Errorf("%s: want object, got %s", path, describe(v))
	}
	known := make(map[string]bool, len(t.Fields))
	for _, f := range t.Fields {
		known[f.Name] = true
		e, present := m[f.Name]
		if !present || e == nil {
			if f.Type.Kind == idl.TypeMaybe {
				continue
			}
			return fmt.Errorf("%s: field %q is missing", path, f.Name)
		}
		if err := validateValue(path+"."+f.Name, e, f.Type, iface); err != nil {
			return err
		}
	}
	var unknown []string
	for k := range m {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("%s: undeclared fields %q", path, unknown)
	}
	return nil
}

func describe(v interface{}) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case json.Number:
		return "number " + string(x)
	case string:
		return "string " + strconv.Quote(x)
	case []interface{}:
		return "array"
	case map[string]interface{}:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
