// SPDX-License-Identifier: MIT

// Checks of the allocation lifecycle (io.tokenbudget.agent) and of what the
// admin interface shows of it, through varlink-go's generic call API.

package main

import (
	"fmt"
	"os"
)

type requestReply struct {
	Allocation string `json:"allocation"`
	Decision   string `json:"decision"`
	Granted    int64  `json:"granted"`
	WarnAt     int64  `json:"warnAt"`
	HardLimit  int64  `json:"hardLimit"`
}

type reportReply struct {
	State string `json:"state"`
	Used  int64  `json:"used"`
}

type releaseReply struct {
	Used     int64 `json:"used"`
	Refunded int64 `json:"refunded"`
}

// The runner configures warn_multiplier = 1.5 and hard_multiplier = 2.0.
func wantWarnAt(granted int64) int64    { return (3*granted + 1) / 2 } // ceil(1.5 * granted)
func wantHardLimit(granted int64) int64 { return 2 * granted }

// Allocation ids are opaque strings of at most 63 bytes.
const maxAllocationBytes = 63

func (r *requestReply) verify(granted int64, decision string) error {
	var errs []string
	if r.Allocation == "" || len(r.Allocation) > maxAllocationBytes {
		errs = append(errs, fmt.Sprintf("allocation %q: want 1..%d bytes", r.Allocation, maxAllocationBytes))
	}
	for _, f := range []struct {
		name      string
		got, want interface{}
	}{
		{"decision", r.Decision, decision},
		{"granted", r.Granted, granted},
		{"warnAt", r.WarnAt, wantWarnAt(granted)},
		{"hardLimit", r.HardLimit, wantHardLimit(granted)},
	} {
		if f.got != f.want {
			errs = append(errs, fmt.Sprintf("%s = %v, want %v", f.name, f.got, f.want))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("Request reply %+v: %v", *r, joinErrors(errs))
	}
	return nil
}

func (ss *session) request(params interface{}, form paramsForm) (*requestReply, error) {
	var r requestReply
	if err := ss.call(agentIface+".Request", params, form, &r); err != nil {
		return nil, fmt.Errorf("Request(%s): %v", mustJSON(params), err)
	}
	return &r, nil
}

func (ss *session) report(id string, inputTokens, outputTokens int64, wantState string, wantUsed int64) error {
	params := map[string]interface{}{"allocation": id, "inputTokens": inputTokens, "outputTokens": outputTokens}
	var r reportReply
	if err := ss.call(agentIface+".Report", params, paramsValue, &r); err != nil {
		return fmt.Errorf("Report(%s): %v", mustJSON(params), err)
	}
	if r.State != wantState || r.Used != wantUsed {
		return fmt.Errorf("Report(%s) = %+v, want state %q used %d", mustJSON(params), r, wantState, wantUsed)
	}
	return nil
}

// release settles id; totals is nil (the last reported totals) or
// {inputTokens, outputTokens}.
func (ss *session) release(id string, totals []int64, wantUsed, wantRefunded int64) error {
	params := map[string]interface{}{"allocation": id}
	if totals != nil {
		params["inputTokens"] = totals[0]
		params["outputTokens"] = totals[1]
	}
	var r releaseReply
	if err := ss.call(agentIface+".Release", params, paramsValue, &r); err != nil {
		return fmt.Errorf("Release(%s): %v", mustJSON(params), err)
	}
	if r.Used != wantUsed || r.Refunded != wantRefunded {
		return fmt.Errorf("Release(%s) = %+v, want used %d refunded %d", mustJSON(params), r, wantUsed, wantRefunded)
	}
	return nil
}

// Odd on purpose: warnAt = ceil(1.5 * 1001) = 1502 needs rounding up.
const cycleEstimate = 1001

func checkCycle(ss *session) error {
	r, err := ss.request(map[string]interface{}{
		"estimate": cycleEstimate, "class": "conformance", "agent": "varlink-go", "priority": "normal",
	}, paramsValue)
	if err != nil {
		return err
	}
	if err := r.verify(cycleEstimate, "granted"); err != nil {
		return err
	}
	if err := ss.report(r.Allocation, 400, 300, "ok", 700); err != nil {
		return err
	}
	// 1100 + 402 = warnAt exactly: the warning starts at warnAt, inclusive.
	if err := ss.report(r.Allocation, 1100, 402, "warning", 1502); err != nil {
		return err
	}
	// No totals: settled at the last report; the rest of hardLimit is refunded.
	return ss.release(r.Allocation, nil, 1502, 2002-1502)
}

func checkExceeded(ss *session) error {
	r, err := ss.request(map[string]interface{}{"estimate": cycleEstimate}, paramsValue)
	if err != nil {
		return err
	}
	if err := r.verify(cycleEstimate, "granted"); err != nil {
		return err
	}
	if err := ss.report(r.Allocation, 1000, 1001, "warning", 2001); err != nil {
		return err
	}
	// The same total again is a harmless retry.
	if err := ss.report(r.Allocation, 1000, 1001, "warning", 2001); err != nil {
		return fmt.Errorf("identical retry: %v", err)
	}
	if err := ss.report(r.Allocation, 1000, 1002, "exceeded", 2002); err != nil {
		return err
	}
	if err := ss.report(r.Allocation, 1500, 1100, "exceeded", 2600); err != nil {
		return err
	}
	// Usage past the hard limit is accounted, and nothing is left to refund.
	return ss.release(r.Allocation, []int64{1600, 1100}, 2700, 0)
}

func checkDefaultEstimate(ss *session) error {
	for _, row := range []struct {
		name   string
		params interface{}
		form   paramsForm
	}{
		{"parameters absent", nil, paramsAbsent},
		{"parameters null", nil, paramsValue},
		{"estimate null", map[string]interface{}{"estimate": nil}, paramsValue},
	} {
		r, err := ss.request(row.params, row.form)
		if err != nil {
			return fmt.Errorf("%s: %v", row.name, err)
		}
		if err := r.verify(ss.s.defaultEstimate, "granted"); err != nil {
			return fmt.Errorf("%s: %v", row.name, err)
		}
		if err := ss.release(r.Allocation, nil, 0, wantHardLimit(ss.s.defaultEstimate)); err != nil {
			return fmt.Errorf("%s: %v", row.name, err)
		}
	}
	return nil
}

func checkDegraded(ss *session) error {
	max := ss.s.maxRequestTokens
	for _, row := range []struct {
		estimate int64
		decision string
	}{
		{max, "granted"},
		{max + 1, "degraded"},
	} {
		r, err := ss.request(map[string]interface{}{"estimate": row.estimate}, paramsValue)
		if err != nil {
			return err
		}
		if err := r.verify(max, row.decision); err != nil {
			return fmt.Errorf("estimate %d: %v", row.estimate, err)
		}
		if err := ss.release(r.Allocation, nil, 0, wantHardLimit(max)); err != nil {
			return fmt.Errorf("estimate %d: %v", row.estimate, err)
		}
	}
	return nil
}

type adminAllocation struct {
	ID        string  `json:"id"`
	PID       int64   `json:"pid"`
	UID       int64   `json:"uid"`
	Command   string  `json:"command"`
	Agent     *string `json:"agent"`
	Class     *string `json:"class"`
	Model     *string `json:"model"`
	Priority  string  `json:"priority"`
	Granted   int64   `json:"granted"`
	WarnAt    int64   `json:"warnAt"`
	HardLimit int64   `json:"hardLimit"`
	Reserved  int64   `json:"reserved"`
	Used      int64   `json:"used"`
	State     string  `json:"state"`
}

type adminScope struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	PID         *int64 `json:"pid"`
	Reserved    int64  `json:"reserved"`
	Allocations int64  `json:"allocations"`
}

type statusReply struct {
	Version     string       `json:"version"`
	Allocations int64        `json:"allocations"`
	Reserved    int64        `json:"reserved"`
	Scopes      []adminScope `json:"scopes"`
}

func (ss *session) list() ([]adminAllocation, error) {
	var r struct {
		Allocations []adminAllocation `json:"allocations"`
	}
	if err := ss.call(adminIface+".List", nil, paramsValue, &r); err != nil {
		return nil, fmt.Errorf("List: %v", err)
	}
	return r.Allocations, nil
}

func findAllocation(list []adminAllocation, id string) *adminAllocation {
	for i := range list {
		if list[i].ID == id {
			return &list[i]
		}
	}
	return nil
}

func strOrNil(p *string) interface{} {
	if p == nil {
		return nil
	}
	return *p
}

func checkAdmin(ss *session) error {
	const estimate = 777
	r, err := ss.request(map[string]interface{}{
		"estimate": estimate, "class": "conformance-admin", "agent": "varlink-go", "model": "none",
	}, paramsValue)
	if err != nil {
		return err
	}
	if err := ss.report(r.Allocation, 10, 20, "ok", 30); err != nil {
		return err
	}
	if err := ss.verifyStatus(r); err != nil {
		return err
	}
	list, err := ss.list()
	if err != nil {
		return err
	}
	a := findAllocation(list, r.Allocation)
	if a == nil {
		return fmt.Errorf("List lacks open allocation %q: %+v", r.Allocation, list)
	}
	want := adminAllocation{
		ID: r.Allocation, PID: int64(os.Getpid()), UID: int64(os.Getuid()), Priority: "normal",
		Granted: estimate, WarnAt: wantWarnAt(estimate), HardLimit: wantHardLimit(estimate),
		Reserved: wantHardLimit(estimate) - 30, Used: 30, State: "ok",
	}
	got := *a
	got.Command, got.Agent, got.Class, got.Model = "", nil, nil, nil
	if got != want || strOrNil(a.Agent) != "varlink-go" || strOrNil(a.Class) != "conformance-admin" ||
		strOrNil(a.Model) != "none" {
		return fmt.Errorf("List entry %+v (agent %v class %v model %v), want %+v agent varlink-go "+
			"class conformance-admin model none", got, strOrNil(a.Agent), strOrNil(a.Class),
			strOrNil(a.Model), want)
	}
	if err := ss.release(r.Allocation, nil, 30, wantHardLimit(estimate)-30); err != nil {
		return err
	}
	if list, err = ss.list(); err != nil {
		return err
	}
	if findAllocation(list, r.Allocation) != nil {
		return fmt.Errorf("List still shows released allocation %q", r.Allocation)
	}
	return nil
}

// verifyStatus checks that Status charges the open allocation r (30 tokens
// reported) to the global scope and to this process's scope.
func (ss *session) verifyStatus(r *requestReply) error {
	var st statusReply
	if err := ss.call(adminIface+".Status", nil, paramsValue, &st); err != nil {
		return fmt.Errorf("Status: %v", err)
	}
	if st.Version != "0.1.0" || st.Allocations < 1 || st.Reserved < r.HardLimit-30 {
		return fmt.Errorf("Status version %q allocations %d reserved %d, want 0.1.0, >= 1, >= %d",
			st.Version, st.Allocations, st.Reserved, r.HardLimit-30)
	}
	pid := int64(os.Getpid())
	wantScopes := map[string]bool{"global": false, fmt.Sprintf("process:%d", pid): false}
	for _, sc := range st.Scopes {
		if _, ok := wantScopes[sc.Name]; !ok {
			continue
		}
		wantScopes[sc.Name] = true
		if sc.Reserved < r.HardLimit-30 || sc.Allocations < 1 {
			return fmt.Errorf("Status scope %+v: want reserved >= %d, allocations >= 1", sc, r.HardLimit-30)
		}
		if sc.Name != "global" && (sc.Kind != "process" || sc.PID == nil || *sc.PID != pid) {
			return fmt.Errorf("Status scope %s: kind %q pid %v, want process %d", sc.Name, sc.Kind, sc.PID, pid)
		}
	}
	for name, seen := range wantScopes {
		if !seen {
			return fmt.Errorf("Status has no scope %s", name)
		}
	}
	return nil
}
