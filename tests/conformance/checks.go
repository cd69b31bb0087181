// SPDX-License-Identifier: MIT

// The checks, in the order they run. The description check must come before
// every check that uses session.call, since it loads the descriptions that
// replies are validated against. Each check gets its own connection and
// releases every allocation it opens, so one failing check does not skew
// the next.

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/varlink/go/varlink/idl"
)

type check struct {
	name string
	run  func(*session) error
}

var checks = []check{
	{"GetInfo through varlink-go's Connection.GetInfo (parameters null)", checkGetInfo},
	{"GetInterfaceDescription of every interface parses with idl.New", checkDescriptions},
	{"GetInfo with parameters null, absent and {} gives the same declared reply", checkGetInfoForms},
	{"Request, Report (ok), Report (warning), Release", checkCycle},
	{"Report past the hard limit is exceeded; Release with final totals", checkExceeded},
	{"Request without estimate grants default_estimate", checkDefaultEstimate},
	{"Request above max_request_tokens is degraded", checkDegraded},
	{"admin Status and List show the open allocation", checkAdmin},
	{"unknown method and unknown interface errors", checkNotFound},
	{"upper-case interface names get InterfaceNotFound, names outside UAPI.20 close the connection", checkNames},
	{"Release and Report of a released allocation give UnknownAllocation", checkUnknownAllocation},
	{"missing, mistyped and out-of-range parameters give InvalidParameter", checkInvalidParameter},
	{"more, oneway and upgrade flags as varlink-go sends them", checkFlags},
}

var wantInterfaces = []string{"org.varlink.service", "io.tokenbudget.agent", "io.tokenbudget.admin"}

const (
	agentIface = "io.tokenbudget.agent"
	adminIface = "io.tokenbudget.admin"
)

type getInfoReply struct {
	Vendor     string   `json:"vendor"`
	Product    string   `json:"product"`
	Version    string   `json:"version"`
	URL        string   `json:"url"`
	Interfaces []string `json:"interfaces"`
}

func (r *getInfoReply) verify() error {
	var errs []string
	want := getInfoReply{Vendor: "tokenbudget", Product: "tokenbudgetd", Version: "0.1.0", URL: "man:tokenbudgetd(8)"}
	for _, f := range []struct{ name, got, want string }{
		{"vendor", r.Vendor, want.Vendor},
		{"product", r.Product, want.Product},
		{"version", r.Version, want.Version},
		{"url", r.URL, want.URL},
	} {
		if f.got != f.want {
			errs = append(errs, fmt.Sprintf("%s = %q, want %q", f.name, f.got, f.want))
		}
	}
	seen := map[string]bool{}
	for _, i := range r.Interfaces {
		if seen[i] {
			errs = append(errs, fmt.Sprintf("interface %q listed twice", i))
		}
		seen[i] = true
	}
	for _, i := range wantInterfaces {
		if !seen[i] {
			errs = append(errs, fmt.Sprintf("interfaces %q lack %q", r.Interfaces, i))
		}
	}
	return joinErrors(errs)
}

func joinErrors(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "\n"))
}

func checkGetInfo(ss *session) error {
	var r getInfoReply
	err := ss.conn.GetInfo(ss.ctx, &r.Vendor, &r.Product, &r.Version, &r.URL, &r.Interfaces)
	if err != nil {
		return fmt.Errorf("GetInfo: %v", err)
	}
	return r.verify()
}

// checkDescriptions loads the description of every interface GetInfo lists
// into the suite; later checks validate replies against them.
func checkDescriptions(ss *session) error {
	var info getInfoReply
	err := ss.conn.GetInfo(ss.ctx, nil, nil, nil, nil, &info.Interfaces)
	if err != nil {
		return fmt.Errorf("GetInfo: %v", err)
	}
	var errs []string
	for _, name := range info.Interfaces {
		if err := ss.loadDescription(name); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, name := range wantInterfaces {
		if ss.s.idls[name] == nil {
			errs = append(errs, fmt.Sprintf("no parsed description of %s", name))
		}
	}
	if len(errs) == 0 {
		// The reply of GetInterfaceDescription itself, validated now that
		// org.varlink.service is known.
		var r struct{ Description string }
		err := ss.call("org.varlink.service.GetInterfaceDescription",
			map[string]string{"interface": agentIface}, paramsValue, &r)
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	return joinErrors(errs)
}

func (ss *session) loadDescription(name string) error {
	desc, err := ss.conn.GetInterfaceDescription(ss.ctx, name)
	if err != nil {
		return fmt.Errorf("GetInterfaceDescription(%s): %v", name, err)
	}
	parsed, err := idl.New(desc)
	if err != nil {
		return fmt.Errorf("description of %s does not parse with idl.New: %v", name, err)
	}
	if parsed.Name != name {
		return fmt.Errorf("description asked for %s names interface %s", name, parsed.Name)
	}
	if ss.s.protocolDir != "" {
		path := filepath.Join(ss.s.protocolDir, name+".varlink")
		file, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("description of %s: %v", name, err)
		}
		if string(file) != desc {
			return fmt.Errorf("description of %s (%d bytes) differs from %s (%d bytes)",
				name, len(desc), path, len(file))
		}
	}
	ss.s.idls[name] = parsed
	return nil
}

func checkGetInfoForms(ss *session) error {
	const method = "org.varlink.service.GetInfo"
	var errs []string
	for _, row := range []struct {
		name   string
		params interface{}
		form   paramsForm
	}{
		{"null", nil, paramsValue},
		{"absent", nil, paramsAbsent},
		{"{}", struct{}{}, paramsValue},
	} {
		var r getInfoReply
		if err := ss.call(method, row.params, row.form, &r); err != nil {
			errs = append(errs, fmt.Sprintf("parameters %s: %v", row.name, err))
			continue
		}
		if err := r.verify(); err != nil {
			errs = append(errs, fmt.Sprintf("parameters %s: %v", row.name, err))
		}
	}
	return joinErrors(errs)
}
