// SPDX-License-Identifier: MIT

// Command conformance checks tokenbudgetd the way an independent Varlink
// implementation sees it: every call goes through Debian's varlink-go 0.4.0
// client (its Connection.Call, Send and receive functions, and its error
// dispatch), and every interface description the daemon serves must parse
// with varlink-go's idl package. Every reply, and every error that varlink-go
// does not decode itself, is validated against the declared types of the
// daemon's own descriptions (see schema.go).
//
// It does not start the daemon (run-conformance.sh does) and does not test
// protocol violations or limits, which the integration tests cover, but for
// one: a method name outside the UAPI.20 grammar closes the connection, while
// a well-formed one of an unknown interface, upper case included, gets
// InterfaceNotFound (names.go).
//
// Usage: conformance -address unix:PATH [-protocol-dir DIR]
// [-default-estimate N] [-max-request-tokens N]. The numbers must match the
// configuration the daemon runs with. The output is TAP; the exit status is
// 0 when every check passed, 1 when one failed, 2 on usage errors.
// conformance -probe -address unix:PATH only tries to connect once (exit 0
// when it could), so the runner needs no other tool to wait for the socket.

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/varlink/go/varlink"
	"github.com/varlink/go/varlink/idl"
)

// One check gets this long, connecting included.
const checkTimeout = 10 * time.Second

type suite struct {
	address          string
	protocolDir      string
	defaultEstimate  int64
	maxRequestTokens int64
	// Filled by the description check; every later call is validated
	// against these.
	idls map[string]*idl.IDL
}

// A session is one varlink-go connection used by one check.
type session struct {
	s    *suite
	ctx  context.Context
	conn *varlink.Connection
}

// paramsForm selects how the parameters of a call are put on the wire.
type paramsForm int

const (
	paramsValue  paramsForm = iota // Connection.Call: the value, or null for nil
	paramsAbsent                   // Connection.Send with nil: no "parameters" key
)

func (s *suite) dial(ctx context.Context) (*session, error) {
	conn, err := varlink.NewConnection(ctx, s.address)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", s.address, err)
	}
	return &session{s: s, ctx: ctx, conn: conn}, nil
}

func splitMethod(method string) (iface, member string) {
	i := strings.LastIndexByte(method, '.')
	if i < 0 {
		return "", method
	}
	return method[:i], method[i+1:]
}

func (s *suite) lookupMethod(method string) (*idl.IDL, *idl.Method, error) {
	ifname, member := splitMethod(method)
	iface := s.idls[ifname]
	if iface == nil {
		return nil, nil, fmt.Errorf("no parsed description of %s (the description check failed?)", ifname)
	}
	for _, m := range iface.Methods {
		if m.Name == member {
			return iface, m, nil
		}
	}
	return nil, nil, fmt.Errorf("%s declares no method %s", ifname, member)
}

// validateError checks the parameters of an error reply against the error's
// declaration in its interface's description. varlink-go turns the four
// generic org.varlink.service errors into typed values and has already
// decoded those; the checks look at their fields.
func (s *suite) validateError(err error) error {
	var verr *varlink.Error
	if !errors.As(err, &verr) {
		return nil
	}
	ifname, member := splitMethod(verr.Name)
	iface := s.idls[ifname]
	if iface == nil {
		return fmt.Errorf("error %s: interface %s is not described by the daemon", verr.Name, ifname)
	}
	for _, e := range iface.Errors {
		if e.Name != member {
			continue
		}
		var raw []byte
		if p, ok := verr.Parameters.(*json.RawMessage); ok && p != nil {
			raw = *p
		}
		if e.Type == nil {
			return nil
		}
		if vErr := validateParameters(raw, e.Type, iface); vErr != nil {
			return fmt.Errorf("error %s: %v", verr.Name, vErr)
		}
		return nil
	}
	return fmt.Errorf("error %s is not declared in %s", verr.Name, ifname)
}

// rawCall makes one call without any validation and returns the raw reply
// parameters (nil when the reply had none) or varlink-go's error.
func (ss *session) rawCall(method string, params interface{}, form paramsForm) (json.RawMessage, error) {
	var raw json.RawMessage
	if form == paramsAbsent {
		receive, err := ss.conn.Send(ss.ctx, method, nil, 0)
		if err != nil {
			return nil, err
		}
		flags, err := receive(ss.ctx, &raw)
		if err == nil && flags != 0 {
			return nil, fmt.Errorf("%s: reply flags %#x, want none", method, flags)
		}
		return raw, err
	}
	err := ss.conn.Call(ss.ctx, method, params, &raw)
	return raw, err
}

// call makes a call of a declared method, validates the reply or the error
// against the descriptions, and decodes a successful reply into out (when
// not nil). The returned error is varlink-go's error, or a validation
// failure wrapped in errInvalidReply.
func (ss *session) call(method string, params interface{}, form paramsForm, out interface{}) error {
	iface, m, err := ss.s.lookupMethod(method)
	if err != nil {
		return err
	}
	raw, err := ss.rawCall(method, params, form)
	if err != nil {
		if vErr := ss.s.validateError(err); vErr != nil {
			return &invalidReply{vErr}
		}
		return err
	}
	if vErr := validateParameters(raw, m.Out, iface); vErr != nil {
		return &invalidReply{fmt.Errorf("%s reply %s: %v", method, raw, vErr)}
	}
	if out != nil && raw != nil {
		if dErr := json.Unmarshal(raw, out); dErr != nil {
			return &invalidReply{fmt.Errorf("%s reply %s: %v", method, raw, dErr)}
		}
	}
	return nil
}

type invalidReply struct{ err error }

func (e *invalidReply) Error() string { return "invalid reply: " + e.err.Error() }

// callErr makes a call that must fail and returns the error; a success or a
// reply that does not match its declaration is a failure of the check.
func (ss *session) callErr(method string, params interface{}) (error, error) {
	raw, err := ss.rawCall(method, params, paramsValue)
	if err == nil {
		return nil, fmt.Errorf("%s(%s) succeeded with %s, want an error", method, mustJSON(params), raw)
	}
	var verr *varlink.Error
	if errors.As(err, &verr) || isServiceError(err) {
		if vErr := ss.s.validateError(err); vErr != nil {
			return nil, vErr
		}
		return err, nil
	}
	return nil, fmt.Errorf("%s(%s): %v (not a Varlink error reply)", method, mustJSON(params), err)
}

func isServiceError(err error) bool {
	var a *varlink.InterfaceNotFound
	var b *varlink.MethodNotFound
	var c *varlink.MethodNotImplemented
	var d *varlink.InvalidParameter
	return errors.As(err, &a) || errors.As(err, &b) || errors.As(err, &c) || errors.As(err, &d)
}

func mustJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

func (ss *session) close() {
	ss.conn.Close()
}

func (s *suite) run() int {
	fmt.Printf("1..%d\n", len(checks))
	failed := 0
	start := time.Now()
	for i, c := range checks {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		err := s.runOne(ctx, c)
		cancel()
		elapsed := time.Since(t0).Round(time.Microsecond)
		if err != nil {
			failed++
			fmt.Printf("not ok %d - %s (%v)\n", i+1, c.name, elapsed)
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Printf("# %s\n", line)
			}
		} else {
			fmt.Printf("ok %d - %s (%v)\n", i+1, c.name, elapsed)
		}
	}
	fmt.Printf("# %d of %d checks failed, %v in all\n", failed, len(checks),
		time.Since(start).Round(time.Microsecond))
	if failed > 0 {
		return 1
	}
	return 0
}

func (s *suite) runOne(ctx context.Context, c check) error {
	ss, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer ss.close()
	return c.run(ss)
}

func (s *suite) probe() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := varlink.NewConnection(ctx, s.address)
	if err != nil {
		return 1
	}
	conn.Close()
	return 0
}

func main() {
	s := &suite{idls: map[string]*idl.IDL{}}
	flag.StringVar(&s.address, "address", "", "Varlink address of the daemon, unix:PATH")
	flag.StringVar(&s.protocolDir, "protocol-dir", "",
		"directory with the .varlink files the descriptions must equal (empty: not compared)")
	flag.Int64Var(&s.defaultEstimate, "default-estimate", 4000, "default_estimate the daemon runs with")
	flag.Int64Var(&s.maxRequestTokens, "max-request-tokens", 200000, "max_request_tokens the daemon runs with")
	probe := flag.Bool("probe", false, "only try to connect once; exit 0 when that worked")
	flag.Parse()
	if s.address == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: conformance -address unix:PATH [-protocol-dir DIR] "+
			"[-default-estimate N] [-max-request-tokens N]\n       conformance -probe -address unix:PATH")
		os.Exit(2)
	}
	if *probe {
		os.Exit(s.probe())
	}
	os.Exit(s.run())
}
