// SPDX-License-Identifier: MIT

// Checks of error replies as varlink-go surfaces them (its typed
// org.varlink.service errors, or *varlink.Error with raw parameters for the
// interface's own errors), and of the call flags varlink-go can send.

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/varlink/go/varlink"
)

// verifyAlive checks that the connection still answers after an error.
func (ss *session) verifyAlive(after string) error {
	var r getInfoReply
	if err := ss.call("org.varlink.service.GetInfo", nil, paramsValue, &r); err != nil {
		return fmt.Errorf("GetInfo after %s: %v", after, err)
	}
	return r.verify()
}

func checkNotFound(ss *session) error {
	const unknownIface = "org.example.teleport"
	rows := []struct {
		method string
		params interface{}
		verify func(error) error
	}{
		{agentIface + ".Teleport", nil, wantMethodNotFound(agentIface + ".Teleport")},
		{adminIface + ".Teleport", nil, wantMethodNotFound(adminIface + ".Teleport")},
		{"org.varlink.service.Teleport", struct{}{}, wantMethodNotFound("org.varlink.service.Teleport")},
		{unknownIface + ".Go", nil, wantInterfaceNotFound(unknownIface)},
		{"org.varlink.service.GetInterfaceDescription", map[string]string{"interface": unknownIface},
			wantInterfaceNotFound(unknownIface)},
	}
	var errs []string
	for _, row := range rows {
		got, err := ss.callErr(row.method, row.params)
		if err == nil {
			err = row.verify(got)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", row.method, err))
		}
	}
	if err := ss.verifyAlive("the errors"); err != nil {
		errs = append(errs, err.Error())
	}
	return joinErrors(errs)
}

// The Varlink specification does not say whether MethodNotFound names the
// method fully qualified (systemd, libvarlink) or by its member name only
// (varlink-go's own service); both identify the method.
func wantMethodNotFound(method string) func(error) error {
	return func(err error) error {
		var e *varlink.MethodNotFound
		if !errors.As(err, &e) {
			return fmt.Errorf("got %s (%#v), want org.varlink.service.MethodNotFound", err, err)
		}
		_, member := splitMethod(method)
		if e.Method != method && e.Method != member {
			return fmt.Errorf("MethodNotFound method %q, want %q or %q", e.Method, method, member)
		}
		return nil
	}
}

func wantInterfaceNotFound(iface string) func(error) error {
	return func(err error) error {
		var e *varlink.InterfaceNotFound
		if !errors.As(err, &e) {
			return fmt.Errorf("got %s (%#v), want org.varlink.service.InterfaceNotFound", err, err)
		}
		if e.Interface != iface {
			return fmt.Errorf("InterfaceNotFound interface %q, want %q", e.Interface, iface)
		}
		return nil
	}
}

func wantInvalidParameter(parameter string) func(error) error {
	return func(err error) error {
		var e *varlink.InvalidParameter
		if !errors.As(err, &e) {
			return fmt.Errorf("got %s (%#v), want org.varlink.service.InvalidParameter", err, err)
		}
		if e.Parameter != parameter {
			return fmt.Errorf("InvalidParameter parameter %q, want %q", e.Parameter, parameter)
		}
		return nil
	}
}

// wantAgentError expects the agent interface's error name with parameters
// equal to want (the types were validated against the description already).
func wantAgentError(name string, want map[string]interface{}) func(error) error {
	return func(err error) error {
		var e *varlink.Error
		if !errors.As(err, &e) || e.Name != agentIface+"."+name {
			return fmt.Errorf("got %s (%#v), want %s.%s", err, err, agentIface, name)
		}
		var got map[string]interface{}
		if p, ok := e.Parameters.(*json.RawMessage); ok && p != nil {
			if uErr := json.Unmarshal(*p, &got); uErr != nil {
				return fmt.Errorf("%s parameters: %v", e.Name, uErr)
			}
		}
		if mustJSON(got) != mustJSON(want) {
			return fmt.Errorf("%s parameters %s, want %s", e.Name, mustJSON(got), mustJSON(want))
		}
		return nil
	}
}

func checkUnknownAllocation(ss *session) error {
	r, err := ss.request(map[string]interface{}{"estimate": 100}, paramsValue)
	if err != nil {
		return err
	}
	if err := ss.release(r.Allocation, nil, 0, wantHardLimit(100)); err != nil {
		return err
	}
	const never = "conformance-never-granted"
	unknown := func(id string) func(error) error {
		return wantAgentError("UnknownAllocation", map[string]interface{}{"allocation": id})
	}
	rows := []struct {
		method string
		params interface{}
		verify func(error) error
	}{
		{"Release", map[string]interface{}{"allocation": r.Allocation}, unknown(r.Allocation)},
		{"Release", map[string]interface{}{"allocation": r.Allocation, "inputTokens": 1, "outputTokens": 1},
			unknown(r.Allocation)},
		{"Report", map[string]interface{}{"allocation": r.Allocation, "inputTokens": 1, "outputTokens": 1},
			unknown(r.Allocation)},
		{"Release", map[string]interface{}{"allocation": never}, unknown(never)},
	}
	var errs []string
	for _, row := range rows {
		got, err := ss.callErr(agentIface+"."+row.method, row.params)
		if err == nil {
			err = row.verify(got)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s(%s): %v", row.method, mustJSON(row.params), err))
		}
	}
	if err := ss.verifyAlive("UnknownAllocation"); err != nil {
		errs = append(errs, err.Error())
	}
	return joinErrors(errs)
}

func checkInvalidParameter(ss *session) error {
	r, err := ss.request(map[string]interface{}{"estimate": 100}, paramsValue)
	if err != nil {
		return err
	}
	id := r.Allocation
	if err := ss.report(id, 10, 10, "ok", 20); err != nil {
		return err
	}
	type params = map[string]interface{}
	rows := []struct {
		method    string
		params    params
		parameter string
	}{
		{"Report", params{"allocation": id, "inputTokens": 20}, "outputTokens"},
		{"Report", params{"allocation": id, "outputTokens": 20}, "inputTokens"},
		{"Report", params{"inputTokens": 20, "outputTokens": 20}, "allocation"},
		{"Report", params{"allocation": id, "inputTokens": 20, "outputTokens": nil}, "outputTokens"},
		{"Report", params{"allocation": id, "inputTokens": "20", "outputTokens": 20}, "inputTokens"},
		{"Report", params{"allocation": id, "inputTokens": 20, "outputTokens": -1}, "outputTokens"},
		{"Report", params{"allocation": id, "inputTokens": 20, "outputTokens": 20.5}, "outputTokens"},
		{"Report", params{"allocation": 7, "inputTokens": 20, "outputTokens": 20}, "allocation"},
		{"Report", params{"allocation": id, "inputTokens": 20, "outputTokens": 20, "bogus": 1}, "bogus"},
		{"Report", params{"allocation": id, "inputTokens": 9, "outputTokens": 20}, "inputTokens"},
		{"Report", params{"allocation": id, "inputTokens": 20, "outputTokens": 9}, "outputTokens"},
		{"Report", params{"allocation": id, "inputTokens": int64(1e12), "outputTokens": 20}, "inputTokens"},
		{"Release", params{"inputTokens": 20}, "allocation"},
		{"Request", params{"estimate": 0}, "estimate"},
		{"Request", params{"estimate": int64(1e12)}, "estimate"},
		{"Request", params{"priority": "urgent"}, "priority"},
		{"Request", params{"class": strings.Repeat("c", 256)}, "class"},
		{"Request", params{"agent": strings.Repeat("a", 256)}, "agent"},
		{"Request", params{"model": strings.Repeat("m", 256)}, "model"},
	}
	var errs []string
	for i, row := range rows {
		got, err := ss.callErr(agentIface+"."+row.method, row.params)
		if err == nil {
			err = wantInvalidParameter(row.parameter)(got)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("row %d %s(%.120s): %v", i, row.method, mustJSON(row.params), err))
		}
	}
	// None of the bad calls changed the allocation.
	if err := ss.report(id, 10, 10, "ok", 20); err != nil {
		errs = append(errs, "after the errors: "+err.Error())
	}
	if err := ss.release(id, nil, 20, wantHardLimit(100)-20); err != nil {
		errs = append(errs, err.Error())
	}
	return joinErrors(errs)
}

func checkFlags(ss *session) error {
	// "more" on a method that does not stream: one normal reply, no continues.
	receive, err := ss.conn.Send(ss.ctx, "org.varlink.service.GetInfo", nil, varlink.More)
	if err != nil {
		return fmt.Errorf("send GetInfo with more: %v", err)
	}
	var info getInfoReply
	flags, err := receive(ss.ctx, &info)
	if err != nil {
		return fmt.Errorf("GetInfo with more: %v", err)
	}
	if flags&varlink.Continues != 0 {
		return fmt.Errorf("GetInfo with more: reply has continues, want a single reply")
	}
	if err := info.verify(); err != nil {
		return fmt.Errorf("GetInfo with more: %v", err)
	}

	// oneway calls get no reply, even an error: the next reply read on the
	// connection must be the one of the call after them.
	for _, m := range []struct {
		method string
		params interface{}
	}{
		{"org.varlink.service.GetInfo", struct{}{}},
		{agentIface + ".Report", map[string]interface{}{"allocation": "conformance-none"}},
		{agentIface + ".Teleport", struct{}{}},
	} {
		if _, err := ss.conn.Send(ss.ctx, m.method, m.params, varlink.Oneway); err != nil {
			return fmt.Errorf("send oneway %s: %v", m.method, err)
		}
	}
	var desc struct {
		Description string `json:"description"`
	}
	err = ss.call("org.varlink.service.GetInterfaceDescription", map[string]string{"interface": adminIface},
		paramsValue, &desc)
	if err != nil {
		return fmt.Errorf("call after oneway calls: %v", err)
	}
	if !strings.Contains(desc.Description, "interface "+adminIface) {
		return fmt.Errorf("call after oneway calls got a reply that is not its own: %.80q", desc.Description)
	}

	// upgrade is not supported by any of our methods.
	upgrade, err := ss.conn.Upgrade(ss.ctx, "org.varlink.service.GetInfo", nil)
	if err != nil {
		return fmt.Errorf("send GetInfo with upgrade: %v", err)
	}
	_, _, err = upgrade(ss.ctx, &info)
	if vErr := wantInvalidParameter("upgrade")(err); vErr != nil {
		return fmt.Errorf("GetInfo with upgrade: %v", vErr)
	}
	return ss.verifyAlive("upgrade")
}
