// SPDX-License-Identifier: MIT

// Checks of method names against the UAPI.20 grammar
// (https://uapi-group.org/specifications/specs/varlink/, Interface
// Definition):
//
//	interface_name  [A-Za-z]([-]*[A-Za-z0-9])*(\.[A-Za-z0-9]([-]*[A-Za-z0-9])*)+
//	name            [A-Z][A-Za-z0-9]*
//
// A call of a method whose name is well formed but whose interface the
// daemon does not implement, upper case included, gets
// org.varlink.service.InterfaceNotFound and the connection stays usable; a
// name outside the grammar is a malformed message, and the daemon closes
// the connection without a reply (UAPI.20, Connection Lifecycle). varlink-go
// sends whatever name it is given, so the names reach the wire as written.

package main

import (
	"errors"
	"fmt"
	"io"
	"syscall"
)

// Well formed, not implemented: the interface named in InterfaceNotFound.
var unknownInterfaceNames = []struct{ method, iface string }{
	{"com.example.DoesNotExist.Foo", "com.example.DoesNotExist"},
	{"Com.Example.DoesNotExist.Foo", "Com.Example.DoesNotExist"},
	// Names are case-sensitive: this is not io.tokenbudget.agent.
	{"io.TokenBudget.agent.Request", "io.TokenBudget.agent"},
	{"IO.TOKENBUDGET.AGENT.Request", "IO.TOKENBUDGET.AGENT"},
	// Labels after the first may start with a digit; dashes may repeat.
	{"org.9lives.a--b.Go2", "org.9lives.a--b"},
	{"x.Y.Z", "x.Y"},
}

// Outside the grammar: the connection is closed.
var malformedMethodNames = []struct{ method, why string }{
	{"", "empty"},
	{"Foo", "no interface"},
	{"example.Foo", "an interface of one label"},
	{"com..example.Foo", "an empty label"},
	{".com.example.Foo", "a leading dot"},
	{"com.example.Foo.", "a trailing dot (empty method name)"},
	{"com.example..Foo", "an empty last label"},
	{"1com.example.Foo", "a first label starting with a digit"},
	{"-com.example.Foo", "a label starting with a dash"},
	{"com.-example.Foo", "a later label starting with a dash"},
	{"com.example-.Foo", "a label ending with a dash"},
	{"com.ex_ample.Foo", "an underscore in a label"},
	{"com.ex ample.Foo", "a space in a label"},
	{"com.ex\u00e4mple.Foo", "a non-ASCII letter in a label"},
	{"com.example.foo", "a method name starting lower case"},
	{"com.example.9Foo", "a method name starting with a digit"},
	{"com.example.Fo-o", "a dash in the method name"},
	{"com.example.Fo_o", "an underscore in the method name"},
}

func checkNames(ss *session) error {
	var errs []string
	for _, row := range unknownInterfaceNames {
		if err := ss.s.wantUnknownInterface(ss, row.method, nil, row.iface); err != nil {
			errs = append(errs, fmt.Sprintf("%q: %v", row.method, err))
		}
	}
	const method = "org.varlink.service.GetInterfaceDescription"
	if err := ss.s.wantUnknownInterface(ss, method, map[string]string{"interface": "com.example.DoesNotExist"},
		"com.example.DoesNotExist"); err != nil {
		errs = append(errs, fmt.Sprintf("GetInterfaceDescription(com.example.DoesNotExist): %v", err))
	}
	for _, row := range malformedMethodNames {
		if err := ss.s.wantClosed(ss, row.method); err != nil {
			errs = append(errs, fmt.Sprintf("%q (%s): %v", row.method, row.why, err))
		}
	}
	// The daemon outlives the connections it closed.
	if err := ss.verifyAlive("the malformed names"); err != nil {
		errs = append(errs, err.Error())
	}
	return joinErrors(errs)
}

// wantUnknownInterface calls method on a connection of its own, expects
// InterfaceNotFound naming iface, and that the connection still answers.
func (s *suite) wantUnknownInterface(parent *session, method string, params interface{}, iface string) error {
	ss, err := s.dial(parent.ctx)
	if err != nil {
		return err
	}
	defer ss.close()
	got, err := ss.callErr(method, params)
	if err == nil {
		err = wantInterfaceNotFound(iface)(got)
	}
	if err == nil {
		err = ss.verifyAlive("InterfaceNotFound")
	}
	return err
}

// wantClosed calls method on a connection of its own and expects the daemon
// to close it without replying.
func (s *suite) wantClosed(parent *session, method string) error {
	ss, err := s.dial(parent.ctx)
	if err != nil {
		return err
	}
	defer ss.close()
	raw, err := ss.rawCall(method, nil, paramsValue)
	switch {
	case err == nil:
		return fmt.Errorf("answered %s, want the connection closed", raw)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return nil
	default:
		return fmt.Errorf("got %v (%#v), want the connection closed without a reply", err, err)
	}
}
